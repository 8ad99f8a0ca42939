"""TensorRT path: the static check and graph rewrites run everywhere; engine build and run need TensorRT and a GPU."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from metaedge.devices import choose_backend, get_profile
from metaedge.export.tensorrt import (
    build_engines,
    check_graph,
    forward_with_weights,
    prepare_graphs,
    record_engines,
    static_check,
    to_float16,
)
from metaedge.runtime.backends import cuda_gpus
from metaedge.runtime.bundle import Bundle, BundleError

NANO = get_profile("jetson-orin-nano")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def bundle(sinusoid_bundle):
    return sinusoid_bundle


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _theta(bundle) -> dict[str, np.ndarray]:
    b = Bundle.open(bundle)
    return b.manifest.adaptation.layout.split(b.array("theta0.npy"), "theta.")


def _save(tmp_path, nodes, inputs, outputs, inits=()) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_exported_graphs_pass_the_static_check(bundle):
    for name in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx"):
        assert static_check(bundle, get_profile(name)) == []
    assert static_check(bundle, get_profile("cpu-x86_64")) == [
        "cpu-x86_64 has no tensorrt backend; TensorRT engines are for the Jetson profiles"]


def test_static_check_finds_what_tensorrt_cannot_build(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "d"])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", "d"])
    path = _save(tmp_path, [helper.make_node("Det", ["x"], ["t"]), helper.make_node("Cast", ["x"], ["y"], to=11)],
                 [x], [y])
    problems = check_graph(path)
    assert problems[0] == "g.onnx: operators outside TensorRT's set: Det"
    assert problems[1].startswith("g.onnx: float64 tensors (TensorRT has no double type): y")
    assert "input x has dynamic axes [0, 1]; only the sample axis (0) of xs, ys, x" in problems[2]
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    xs = helper.make_tensor_value_info("xs", TensorProto.FLOAT, ["n", 4])
    out = helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", None])
    path = _save(tmp_path, [helper.make_node("TopK", ["xs", "k"], ["v", "i"])], [xs, k], [out])
    assert check_graph(path) == ["g.onnx: TopK v takes input 1 from a computed value; TensorRT needs it constant"]
    assert "int64 inputs/outputs k (TensorRT 8.5 has no int64 I/O" in check_graph(path, "8.5")[0]
    kc = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    path = _save(tmp_path, [helper.make_node("TopK", ["xs", "k"], ["v", "i"])], [xs], [out], [kc])
    assert check_graph(path, "8.5") == []


def test_forward_with_weights_equals_the_graph_fed_with_theta(bundle):
    model = onnx.load(str(bundle / "forward.onnx"))
    theta = _theta(bundle)
    x = np.linspace(-1.5, 1.5, 33, dtype=np.float32)[:, None]
    fed = _session(model).run(None, {"x": x, **theta})[0]
    rewritten = forward_with_weights(model, theta)
    assert [i.name for i in rewritten.graph.input] == ["x"]
    assert sorted(theta) == sorted(i.name for i in rewritten.graph.initializer if i.name.startswith("theta."))
    assert np.array_equal(_session(rewritten).run(None, {"x": x})[0], fed)
    with pytest.raises(ValueError, match="no values for forward inputs theta.head.bias"):
        forward_with_weights(model, {k: v for k, v in theta.items() if k != "theta.head.bias"})


def test_float16_forward_matches_float32_to_half_precision(bundle):
    full = forward_with_weights(onnx.load(str(bundle / "forward.onnx")), _theta(bundle))
    half = to_float16(full)
    assert {i.data_type for i in half.graph.initializer if i.name.startswith("theta.")} == {TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    onnx.checker.check_model(half)
    x = np.linspace(-1.5, 1.5, 33, dtype=np.float32)[:, None]
    ref = _session(full).run(None, {"x": x})[0]
    got = _session(half).run(None, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16
    scale = np.abs(ref).max()
    assert np.abs(got.astype(np.float32) - ref).max() / scale < 1e-2
    assert np.abs(got.astype(np.float32) - ref).max() / scale > 1e-6  # it really computed in half precision


def test_prepare_graphs_per_tensorrt_family(bundle, tmp_path):
    ten = prepare_graphs(bundle, tmp_path / "10", "10.3.0", fp16_forward=True)
    eleven = prepare_graphs(bundle, tmp_path / "11", "11.1.0", fp16_forward=True)
    graphs = set(json.loads((bundle / "manifest.json").read_text())["graphs"])
    assert "adapt_predict" in graphs and set(ten) == graphs - {"adapt_predict"}  # its forward would bypass the engine
    fwd10, fwd11 = onnx.load(str(ten["forward"])), onnx.load(str(eleven["forward"]))
    assert fwd10.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # FP16 comes from the builder flag
    assert fwd11.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16  # strongly typed: the graph says
    step = onnx.load(str(eleven["adapt_step"]))
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in step.graph.input)  # steps stay float32


def test_recorded_engines_are_hash_checked_and_chosen(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    plans = {}
    for role in ("forward", "adapt_steps"):  # stand-in plan bytes: this test is about the manifest bookkeeping
        plans[role] = copy / f"{role}.{NANO.name}.plan"
        plans[role].write_bytes(f"{role} plan".encode())
    entry = record_engines(copy, NANO, plans, "10.3.0", max_shots=32, max_batch=128)
    assert entry.engines == {"forward": "forward.jetson-orin-nano.plan",
                             "adapt_steps": "adapt_steps.jetson-orin-nano.plan"}
    assert entry.outputs["forward"] == ("y",) and entry.outputs["adapt_steps"][-1] == "losses"
    assert entry.forward_weights_dtype == "float32"
    opened = Bundle.open(copy)
    assert opened.manifest.tensorrt["jetson-orin-nano"] == entry and entry.max_shots == 32
    gpu = {"onnxruntime": ["CPUExecutionProvider"], "tensorrt": True, "native": False, "cuda": True}
    assert choose_backend(NANO, opened.manifest, gpu).backend == "tensorrt"
    plans["forward"].write_bytes(b"tampered")
    with pytest.raises(BundleError, match="forward.jetson-orin-nano.plan does not match its sha256"):
        Bundle.open(copy)
    with pytest.raises(ValueError, match="must be one of forward, adapt_step, adapt_steps, gauss_newton inside"):
        record_engines(copy, NANO, {"forward": tmp_path / "elsewhere.plan"}, "10.3.0", 32, 128)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the build test below covers it")
def test_build_without_tensorrt_says_so(bundle, tmp_path):
    with pytest.raises(ValueError, match="TensorRT is not installed"):  # one line from the CLI, not a traceback
        build_engines(bundle, NANO, tmp_path, max_shots=16, max_batch=64)
    with pytest.raises(ValueError, match="cpu-x86_64 has no tensorrt backend"):
        build_engines(bundle, get_profile("cpu-x86_64"), tmp_path, max_shots=16, max_batch=64)


@pytest.mark.skipif(cuda_gpus() == 0, reason="no CUDA GPU")
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed")  # the nearest mark is reported first
def test_engines_build_refit_and_match_onnxruntime(bundle, tmp_path):
    import shutil

    from metaedge.export.tensorrt import export_tensorrt
    from metaedge.runtime.backends.tensorrt import load_sessions

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    profile = get_profile("jetson-orin-nano")
    export_tensorrt(copy, profile, max_shots=16, max_batch=64)
    b = Bundle.open(copy)
    sessions = load_sessions(b, profile.name)
    theta, rates = _theta(copy), {k.replace("theta.", "rate."): np.full_like(v, 0.01) for k, v in _theta(copy).items()}
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(-1, 1, (10, 1)).astype(np.float32), rng.uniform(-1, 1, (10, 1)).astype(np.float32)
    step = _session(onnx.load(str(copy / "adapt_step.onnx")))
    ref = step.run(None, {"xs": xs, "ys": ys, **theta, **rates})
    got = sessions["adapt_step"].run(None, {"xs": xs, "ys": ys, **theta, **rates})
    for r, g in zip(ref, got):
        assert np.allclose(g, r, rtol=1e-4, atol=1e-5)
    new = {f"theta.{n.removeprefix('new.')}": v for n, v in zip([o.name for o in step.get_outputs()], got)
           if n.startswith("new.")}
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    fwd = _session(onnx.load(str(copy / "forward.onnx")))
    for state in (theta, new):  # the second call refits the engine with the adapted state
        want = fwd.run(None, {"x": x, **state})[0]
        have = sessions["forward"].run(None, {"x": x, **state})[0]
        assert np.abs(have - want).max() <= 1e-2 * np.abs(want).max()  # FP16 forward
