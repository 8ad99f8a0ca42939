"""``adapt_predict.onnx`` (one graph for adapt + predict) against the two-graph path, older bundles without it, and
the exact graph rewrites of ``export/simplify.py``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from metaedge.errors import InputError
from metaedge.export.simplify import simplify
from metaedge.runtime.model import Model


def _unit(seed: int, k: int = 3, scale: float = 1.0):
    from metaedge.sdk.tasks import make_family

    t = make_family("sensor-pressure").sample_task(np.random.default_rng(seed), k, 40)
    return t.x_support, t.y_support * np.float32(scale), t.x_query


@pytest.fixture(scope="module")
def models(small_bundle):
    """The session's Meta-SGD bundle (2 unrolled steps) on ONNX Runtime, guarded and not."""
    return {guard: Model.load(small_bundle, backend="onnxruntime", guard=guard) for guard in (True, False)}


@pytest.mark.parametrize("guard", [True, False])
def test_fused_path_equals_the_two_graph_path(models, guard):
    """Every task, with targets scaled so that the guard rolls back some steps: same kept steps, same state,
    same predictions as adapt_steps.onnx + forward.onnx."""
    model = models[guard]
    kept = []
    for seed in range(12):
        xs, ys, xq = _unit(seed, scale=(1.0, 30.0, 300.0)[seed % 3])
        two = model.adapt(xs, ys)
        fused, predictions = model.adapt_predict(xs, ys, xq)
        assert fused.steps_kept == two.steps_kept and fused.steps_run == two.steps_run == 2
        np.testing.assert_allclose(fused.theta, two.theta, rtol=1e-6, atol=1e-6)
        reference = two.predict(xq)
        np.testing.assert_allclose(predictions, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
        np.testing.assert_allclose(fused.losses, two.losses, rtol=1e-5)
        kept.append(fused.steps_kept)
    if guard:  # the rolled-back branches ran too (the kept state from the graph's history, none kept)
        assert 0 in kept and 2 in kept and min(kept) < 2
    else:
        assert set(kept) == {2}


def test_fused_path_from_a_start_state_and_back_to_theta0(models):
    """A call from an earlier state binds that state; the next call without one adapts from theta0 again."""
    model = models[False]
    xs, ys, xq = _unit(1)
    first = model.adapt(xs, ys)
    xs2, ys2, xq2 = _unit(2)
    fused, predictions = model.adapt_predict(xs2, ys2, xq2, start=first)
    two = model.adapt(xs2, ys2, start=first)
    np.testing.assert_allclose(fused.theta, two.theta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predictions, two.predict(xq2), rtol=1e-5, atol=1e-4)
    again, again_pred = model.adapt_predict(xs, ys, xq)
    np.testing.assert_allclose(again.theta, first.theta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(again_pred, first.predict(xq), rtol=1e-5, atol=1e-4)
    kept_copy = again_pred.copy()
    model.adapt_predict(xs2, ys2, xq2)  # results are new arrays, not views of reused output buffers
    np.testing.assert_array_equal(again_pred, kept_copy)
    other_steps, _ = model.adapt_predict(xs, ys, xq, steps=3)  # not the unrolled count: the step graph
    np.testing.assert_allclose(other_steps.theta, model.adapt(xs, ys, steps=3).theta, rtol=1e-6, atol=1e-6)


def test_fused_path_keeps_the_input_checks(models):
    model = models[True]
    xs, ys, xq = _unit(3)
    bad = xq.copy()
    bad[4, 1] = np.nan
    with pytest.raises(InputError, match=r"inputs hold NaN or infinite values \(sample\(s\) 5\)"):
        model.adapt_predict(xs, ys, bad)
    with pytest.raises(InputError, match=r"inputs must have shape \(n, 2\)"):
        model.adapt_predict(xs, ys, xq[:, :1])
    with pytest.raises(InputError, match="support targets hold NaN"):
        model.adapt_predict(xs, np.full_like(ys, np.nan), xq)


def test_native_backend_adapt_predict_equals_its_two_calls(small_bundle):
    model = Model.load(small_bundle, backend="native")
    xs, ys, xq = _unit(4)
    adapted, predictions = model.adapt_predict(xs, ys, xq)
    two = model.adapt(xs, ys)
    np.testing.assert_array_equal(adapted.theta, two.theta)
    np.testing.assert_array_equal(predictions, two.predict(xq))


def test_a_bundle_without_the_fused_graph_adapts_and_predicts_the_same(small_bundle, models, tmp_path):
    """A bundle exported before adapt_predict.onnx existed (graph and manifest entries removed; unsigned)."""
    old = tmp_path / "old.meb"
    shutil.copytree(small_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["graphs"]["adapt_predict"], manifest["files"]["adapt_predict.onnx"]
    for part in ("ops", "footprint"):
        manifest[part].pop("adapt_predict.onnx", None)
    manifest["footprint"]["graphs"].pop("adapt_predict.onnx", None)
    (old / "adapt_predict.onnx").unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = Model.load(old, backend="onnxruntime", guard=False)
    assert model.bundle.manifest.graphs.adapt_predict is None
    xs, ys, xq = _unit(5)
    adapted, predictions = model.adapt_predict(xs, ys, xq)
    fused, fused_pred = models[False].adapt_predict(xs, ys, xq)
    np.testing.assert_allclose(adapted.theta, fused.theta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predictions, fused_pred, rtol=1e-5, atol=1e-4)


# --- export/simplify.py ---------------------------------------------------------------------------------------------

def _graph(nodes, inits, outputs):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o, shape in outputs.items()],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_simplify_rewrites_exactly_and_only_what_it_may():
    one, two, axes0, flat3 = np.float32(1), np.float32(2), np.array([0]), np.array([3])
    nodes = [
        helper.make_node("Pow", ["x", "one"], ["p1"]),       # x ** 1: removed
        helper.make_node("Pow", ["p1", "two"], ["p2"]),      # a square: a Mul
        helper.make_node("ReduceSum", ["p2", "axes0"], ["s"], keepdims=1),
        helper.make_node("Reshape", ["s", "flat3"], ["bias_grad"]),   # drops the reduced axis: keepdims=0
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1),
        helper.make_node("Squeeze", ["m"], ["loss"]),        # a graph output: the reduction writes it
        helper.make_node("ReduceSum", ["x", "axes0"], ["t"], keepdims=1),
        helper.make_node("Reshape", ["t", "shape13"], ["kept_2d"]),   # (1, 3) -> (1, 3): not the rewrite's case
    ]
    model = _graph(nodes, {"one": one, "two": two, "axes0": axes0, "flat3": flat3, "shape13": np.array([1, 3])},
                   {"bias_grad": [3], "loss": [], "kept_2d": [1, 3]})
    new, removed = simplify(model)
    assert removed == 3 and len(new.graph.node) == 5 and len(model.graph.node) == 8  # the input left as it was
    ops = [n.op_type for n in new.graph.node]
    assert ops.count("Pow") == 0 and ops.count("Mul") == 1 and ops.count("Reshape") == 1 and "Squeeze" not in ops
    assert {t.name for t in new.graph.initializer} == {"axes0", "shape13"}  # the dropped nodes' constants too
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    for before, after in zip(_run(model, x), _run(new, x)):
        assert before.shape == after.shape
        np.testing.assert_array_equal(before, after)


def test_exported_graphs_are_simplified(small_bundle):
    """The bundle's traced graphs carry none of the removable nodes."""
    for name in ("adapt_step.onnx", "adapt_steps.onnx", "adapt_predict.onnx"):
        model = onnx.load(str(small_bundle / name))
        assert simplify(model)[1] == 0, name
        assert not any(n.op_type == "Pow" for n in model.graph.node), name


def test_simplify_stacks_reduced_scalars_and_hoists_power_of_two_scales():
    """The unrolled graph's loss stacking and its per-step ``a * (x * 2)``: fewer nodes, same values."""
    axes0, two, three = np.array([0]), np.float32(2), np.float32(3)
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["m1"], keepdims=0),
             helper.make_node("ReduceMean", ["x"], ["m2"], keepdims=0),
             helper.make_node("Unsqueeze", ["m1", "axes0"], ["u1"]),
             helper.make_node("Unsqueeze", ["m2", "axes0"], ["u2"]),
             helper.make_node("Concat", ["u1", "u2"], ["losses"], axis=0),   # -> keepdims=1, Concat, one Reshape
             helper.make_node("Abs", ["x"], ["a"]),
             helper.make_node("Mul", ["x", "two"], ["x2"]),
             helper.make_node("Mul", ["a", "x2"], ["g1"]),                   # -> Mul(x, a * 2)
             helper.make_node("Mul", ["sq", "two"], ["sq2"]),
             helper.make_node("Mul", ["sq2", "a"], ["g2"]),                  # -> Mul(sq, a * 2): a * 2 shared
             helper.make_node("Mul", ["x", "three"], ["x3"]),
             helper.make_node("Mul", ["a", "x3"], ["g3"])]                   # 3 is no power of two: kept
    model = _graph(nodes, {"axes0": axes0, "two": two, "three": three},
                   {"losses": [2], "g1": ["n", 3], "g2": ["n", 3], "g3": ["n", 3]})
    new, removed = simplify(model)
    ops = [n.op_type for n in new.graph.node]
    assert removed == 2 - 1 + 2 - 1 and "Unsqueeze" not in ops and ops.count("Reshape") == 1
    assert ops.count("Mul") == 1 + 1 + 2 + 2  # the square, a * 2, g1, g2, and x * 3 with g3
    x = np.random.default_rng(1).normal(size=(9, 3)).astype(np.float32)
    for before, after in zip(_run(model, x), _run(new, x)):
        assert before.shape == after.shape
        np.testing.assert_array_equal(before, after)


def test_simplify_folds_scalar_rate_updates_into_gemms():
    """``p - r * g`` for a weight gradient ``d^T a`` and a bias gradient ``sum_rows(d)``: one Gemm each, the bias
    as a ``(1, o)`` row where its users take one (a Gemm bias, the next update, a Concat of rows), else reshaped."""
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    inits = {"w": w, "b": b, "r": np.float32(0.1), "axes0": np.array([0]), "shape24": np.array([2, 4])}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["d"], transB=1),           # d (n, 4): stands in for dZ
             helper.make_node("Transpose", ["d"], ["dt"], perm=[1, 0]),
             helper.make_node("MatMul", ["dt", "x"], ["gw"]),                     # (4, 3) weight gradient
             helper.make_node("Mul", ["r", "gw"], ["sw"]),
             helper.make_node("Sub", ["w", "sw"], ["w1"]),                        # -> Gemm(d, x, w, transA=1)
             helper.make_node("ReduceSum", ["d", "axes0"], ["gb"], keepdims=0),   # (4,) bias gradient
             helper.make_node("Mul", ["gb", "r"], ["sb"]),
             helper.make_node("Sub", ["b", "sb"], ["b1"]),                        # -> Gemm(ones, d, b): a row
             helper.make_node("Gemm", ["x", "w1", "b1"], ["d2"], transB=1),       # takes the row as its bias
             helper.make_node("ReduceSum", ["d2", "axes0"], ["gb2"], keepdims=0),
             helper.make_node("Mul", ["r", "gb2"], ["sb2"]),
             helper.make_node("Sub", ["b1", "sb2"], ["b2"]),                      # the next update: row in, row out
             helper.make_node("Concat", ["b1", "b2"], ["cat"], axis=0),           # rows only: (2, 4) directly
             helper.make_node("Reshape", ["cat", "shape24"], ["history"]),
             helper.make_node("Relu", ["b2"], ["last"])]                          # any other user: reshaped back
    model = _graph(nodes, inits, {"w1": [4, 3], "history": [2, 4], "last": [4]})
    new, removed = simplify(model)
    ops = [n.op_type for n in new.graph.node]
    assert "MatMul" not in ops and "Transpose" not in ops and "ReduceSum" not in ops and "Sub" not in ops
    assert ops.count("Gemm") == 2 + 3 and ops.count("Reshape") == 2  # the history's and the one for Relu
    assert removed == 15 - len(ops)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    for before, after in zip(_run(model, x), _run(new, x)):
        assert before.shape == after.shape
        np.testing.assert_allclose(before, after, rtol=1e-6, atol=1e-6)
    flat = _graph(nodes[:8], inits, {"w1": [4, 3], "b1": [4]})  # a graph output keeps its (o,) shape
    for before, after in zip(_run(flat, x), _run(simplify(flat)[0], x)):
        assert before.shape == after.shape
        np.testing.assert_allclose(before, after, rtol=1e-6, atol=1e-6)
    kept = _graph(nodes[:5], {**inits, "r": np.float32(0.1) * np.ones((4, 3), np.float32)}, {"w1": [4, 3]})
    assert simplify(kept)[1] == 0  # per-element rates (Meta-SGD): no Gemm computes r * g


def test_drop_io_cuts_an_output_and_what_only_it_needed():
    """``adapt_steps.onnx`` is cut out of ``adapt_predict.onnx``: the query output and input go, with the nodes
    only they needed; the rest computes what it did."""
    from metaedge.export.simplify import drop_io

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["kept"]),
         helper.make_node("Add", ["q", "r"], ["s"]), helper.make_node("Abs", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3]) for n in ("x", "q")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3]) for n in ("y", "kept")],
        [numpy_helper.from_array(np.float32(2), "two")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    cut = drop_io(model, {"q"}, {"y"})
    assert [n.op_type for n in cut.graph.node] == ["Relu", "Mul"] and len(model.graph.node) == 4
    assert [i.name for i in cut.graph.input] == ["x"] and [o.name for o in cut.graph.output] == ["kept"]
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    part = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(part.run(None, {"x": x})[0], full.run(None, {"x": x, "q": x})[1])
    with pytest.raises(ValueError, match="still read the inputs"):
        drop_io(model, {"x"}, {"y"})
