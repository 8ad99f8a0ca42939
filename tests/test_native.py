"""The C runtime: firmware export, parity of the native backend with ONNX Runtime / PyTorch for every firmware
learner, refusals, and the C builds (ctest, aarch64 under qemu-aarch64, Cortex-M4 under qemu-system-arm, fuzzing)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from toolchains import need, need_tools

from metaedge.export.bundle import export_bundle
from metaedge.export.firmware import write_firmware
from metaedge.runtime import native
from metaedge.runtime.model import Model
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.learners import make_learner
from metaedge.sdk.learners.newton import MIN_DAMPING
from metaedge.sdk.models import build_model
from metaedge.sdk.normalize import Normalizer
from metaedge.sdk.run import Run, sample_options, task_rng, to_tensors
from metaedge.sdk.tasks import EpisodicFamily, make_family, register_family
from metaedge.sdk.train import train

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not native.available(), reason=f"{native.unavailable_reason()}")


def _blobs(ways: int = 6, per_class: int = 12, dim: int = 4, seed: int = 0) -> EpisodicFamily:
    """Gaussian blobs in ``dim`` features, one per class: a fast episodic classification family."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (ways, dim))
    x = (centres[:, None, :] + rng.normal(0, 0.7, (ways, per_class, dim))).reshape(-1, dim).astype(np.float32)
    y = np.repeat(np.arange(ways), per_class)
    return EpisodicFamily({"train": (x, y), "test": (x, y)}, ways=3, name="native-blobs")


register_family("native-blobs", lambda **_: _blobs())


def _waves(length: int = 32, ways: int = 5, per_class: int = 8, seed: int = 0) -> EpisodicFamily:
    """Three-channel time series ``(C=3, L)``: each class a waveform (sines of two frequencies, square, sawtooth,
    chirp) with its own phase per channel, plus noise: a fast episodic 1-D family for conv1d ProtoNets."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    shapes = [lambda u: np.sin(2 * np.pi * 2 * u), lambda u: np.sin(2 * np.pi * 5 * u),
              lambda u: np.sign(np.sin(2 * np.pi * 3 * u)), lambda u: 2 * ((4 * u) % 1) - 1,
              lambda u: np.sin(2 * np.pi * (1 + 6 * u) * u)]
    x = np.stack([np.stack([shapes[c](t + 0.1 * ch + rng.uniform(0, 0.05)) for ch in range(3)])
                  for c in range(ways) for _ in range(per_class)])
    x = (x + rng.normal(0, 0.3, x.shape)).astype(np.float32)
    y = np.repeat(np.arange(ways), per_class)
    return EpisodicFamily({"train": (x, y), "test": (x, y)}, ways=3, name="native-waves")


register_family("native-waves", lambda length=32, **_: _waves(int(length)))

CASES = {  # learner -> (training options, adaptation steps compared)
    "maml": (dict(family="sinusoid", algo="maml", hidden=[16, 16], activation="relu"), 5),
    "fomaml": (dict(family="sinusoid", algo="fomaml", hidden=[12, 8], activation="tanh", skip=True), 3),
    "metasgd": (dict(family="sensor-pressure", algo="metasgd", hidden=[16, 16], activation="sigmoid",
                     shots=3), 5),
    "reptile": (dict(family="sinusoid", algo="reptile", hidden=[16], activation="tanh", inner_steps=2), 4),
    "anil": (dict(family="sinusoid", algo="anil", hidden=[16, 16], activation="relu"), 5),
    "maml-classifier": (dict(family="native-blobs", algo="maml", model="mlp", hidden=[16], activation="relu",
                             shots=2, queries=2, inner_lr=0.1), 3),
    "protonet": (dict(family="native-blobs", algo="protonet", model="mlp", hidden=[16, 8], activation="relu",
                      shots=2, queries=2, meta_batch=1), 0),
    "ridge": (dict(family="sensor-pressure", algo="ridge", hidden=[16, 16], activation="tanh", skip=True,
                   shots=3, inner_lr=0.1), 1),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``name -> (run, bundle or None, mebin path)`` for every case, trained for a few iterations."""
    cache = {}

    def get(name: str):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            options = {"shots": 5, "queries": 5, "meta_batch": 4, "iterations": 15, **CASES[name][0]}
            run_dir = train(TrainConfig(**options), root / "run", progress=False)
            run = Run.load(run_dir)
            bundle = None if name == "ridge" else export_bundle(run_dir, root / "bundle", check=False)
            mebin, header = write_firmware(run, root / "fw")
            cache[name] = (run, bundle, mebin, header)
        return cache[name]

    return get


def _tasks(run: Run, n: int = 3):
    classification = run.family.task_kind == "classification"
    return run.family.sample_batch(task_rng(run.config.seed + 303, 0), n, run.config.shots,
                                   4 if classification else 20, **sample_options(run.config, run.family))


@pytest.mark.parametrize("name", [n for n in CASES if n != "ridge"])
def test_native_matches_onnx_runtime(exported, name):
    run, bundle, mebin, header = exported(name)
    steps = CASES[name][1]
    onnx_model, c_model = Model.load(bundle), native.NativeModel(mebin.read_bytes())
    assert header.read_text().count("0x") == mebin.stat().st_size
    assert np.array_equal(c_model.theta0, onnx_model.theta0)
    classification = run.family.task_kind == "classification"
    batch = _tasks(run)
    for i in range(len(batch.x_support)):
        adapted = onnx_model.adapt(batch.x_support[i], batch.y_support[i], steps=steps)
        theta, kept = c_model.adapt(batch.x_support[i], batch.y_support[i], steps=steps)
        assert kept == adapted.steps_kept
        want = adapted.logits(batch.x_query[i]) if classification else adapted.predict(batch.x_query[i])
        got = c_model.logits(theta, batch.x_query[i])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        np.testing.assert_allclose(theta, adapted.theta, rtol=0, atol=1e-5)
        if classification:
            assert np.array_equal(c_model.predict(theta, batch.x_query[i]), adapted.predict(batch.x_query[i]))


def test_ridge_matches_pytorch(exported):
    run, _, mebin, _ = exported("ridge")
    c_model = native.NativeModel(mebin.read_bytes())
    assert c_model.header.solver == "gauss-newton"
    # the damping floor travels in the file (version 3), as the manifest's min_damping
    assert c_model.header.format_version == 3 and c_model.header.min_damping == np.float32(MIN_DAMPING)
    batch = _tasks(run)
    xs, ys, xq, _ = to_tensors(run.normalizer.batch(batch))
    with torch.no_grad():
        ref = run.learner.predictions_after_steps(run.state, xs, ys, xq, [1, 2], guard=True)
    for steps in (1, 2):
        want = run.normalizer.y_inverse(ref[steps].numpy())
        for i in range(len(batch.x_support)):
            theta, _ = c_model.adapt(batch.x_support[i], batch.y_support[i], steps=steps)
            # physical units (up to ~70 here): a few float32 ulps of the value, not only 1e-5 absolute
            np.testing.assert_allclose(c_model.predict(theta, batch.x_query[i]), want[i], rtol=1e-6, atol=1e-5)


def test_adaptation_override_and_state_round_trip(exported, tmp_path):
    run, _, _, _ = exported("maml")
    mebin, _ = write_firmware(run, tmp_path, adapt="head")
    model = native.NativeModel(mebin.read_bytes(), max_shots=2)  # the arena grows for 5 shots
    assert model.header.n_theta == 16 + 1 and model.theta0.shape == (17,)
    batch = _tasks(run, 1)
    theta, kept = model.adapt(batch.x_support[0], batch.y_support[0], steps=3)
    assert kept >= 1 and model.max_shots == 5 and not np.array_equal(theta, model.theta0)
    before = model.predict(theta, batch.x_query[0])
    model.adapt(batch.x_support[0] + 1.0, batch.y_support[0], steps=3)  # another state in between
    np.testing.assert_array_equal(model.predict(theta, batch.x_query[0]), before)


def test_adapt_continues_from_start(exported):
    """``start=`` continues from an earlier state (me_set_theta instead of me_reset): 2 + 3 unguarded steps are the
    5 steps, the ONNX runtime's ``Model.adapt(start=)`` agrees, and a bad start is refused."""
    run, bundle, mebin, _ = exported("maml")
    model, onnx_model = native.NativeModel(mebin.read_bytes()), Model.load(bundle)
    batch = _tasks(run, 1)
    xs, ys, xq = batch.x_support[0], batch.y_support[0], batch.x_query[0]
    five, _ = model.adapt(xs, ys, steps=5, guard=False)
    two, _ = model.adapt(xs, ys, steps=2, guard=False)
    more, kept = model.adapt(xs, ys, steps=3, guard=False, start=two)
    assert kept == 3
    np.testing.assert_array_equal(more, five)
    np.testing.assert_array_equal(model.adapt(xs, ys, steps=4, start=model.theta0)[0], model.adapt(xs, ys, steps=4)[0])
    theta, kept = model.adapt(xs, ys, steps=3, start=two.astype(np.float64).tolist())  # any array-like
    want = onnx_model.adapt(xs, ys, steps=3, start=two)
    assert kept == want.steps_kept
    np.testing.assert_allclose(theta, want.theta, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.predict(theta, xq), want.predict(xq), rtol=0, atol=1e-5)
    with pytest.raises(native.NativeError) as e:
        model.adapt(xs, ys, start=two[:-1])
    assert e.value.status == "argument"
    bad = two.copy()
    bad[3] = np.nan
    with pytest.raises(native.NativeError) as e:
        model.adapt(xs, ys, start=bad)
    assert e.value.status == "nonfinite"


def test_export_refuses_unsupported_layers(tmp_path):
    family = make_family("sinusoid")
    for activation in ("gelu", "silu"):
        learner = make_learner("maml", build_model({"kind": "mlp", "in_dim": 1, "out_dim": 1, "hidden": [8],
                                                    "activation": activation}))
        run = Run(tmp_path, TrainConfig(activation=activation), family, learner, Normalizer.identity(1, 1),
                  learner.init_state())
        with pytest.raises(ValueError, match=r"(GELU|SiLU).*'body\.1'.*--activation relu"):
            write_firmware(run, tmp_path / activation)
    images = EpisodicFamily({"train": (np.zeros((12, 1, 16, 16), np.float32), np.repeat(np.arange(3), 4))}, ways=3)
    conv = build_model({"kind": "conv4", "in_channels": 1, "out_dim": 3, "width": 4, "input_size": 16,
                        "norm": "batch"})
    learner = make_learner("maml", conv, loss="cross_entropy")
    run = Run(tmp_path, TrainConfig(model="conv4"), images, learner, Normalizer.identity(256, 0),
              learner.init_state())
    with pytest.raises(ValueError, match=r"layer 'body\.0' \(Conv2d\).*--model mlp"):
        write_firmware(run, tmp_path / "conv")
    assert not (tmp_path / "conv").exists() and not (tmp_path / "gelu").exists()


def test_header_is_read_by_the_c_parser(exported):
    """``Header`` comes from ``me_model_info`` (no offsets parsed in Python): it matches what the exporter wrote and
    refuses what ``me_model_load`` refuses."""
    run, _, mebin, _ = exported("maml")
    data = mebin.read_bytes()
    header = native.Header.read(data)
    assert (header.task, header.loss, header.solver, header.format_version) == ("regression", "mse", "sgd", 1)
    assert (header.in_dim, header.out_dim, header.input_shape, header.min_damping) == (1, 1, (1,), 0.0)
    assert header.n_theta == sum(p.numel() for p in run.state["params"].values()) == header.n_params
    assert header.default_steps == run.learner.inner_steps
    assert header.crc == int.from_bytes(data[12:16], "little") == zlib.crc32(data[16:])
    with pytest.raises(native.NativeError) as err:
        native.Header.read(data[:-1])
    assert err.value.status == "truncated"


def _api_functions() -> set[str]:
    """Names of the functions metaedge.h declares with ME_API."""
    text = (ROOT / "runtime/c/include/metaedge.h").read_text()
    return set(re.findall(r"^ME_API\b[^;(]*?\b(me_\w+)\s*\(", text, flags=re.M))


def test_exported_symbols_are_the_header_api():
    """The shared library exports exactly the ME_API functions of the header (hidden visibility otherwise)."""
    need_tools("nm")
    api = _api_functions()
    assert {"me_model_load", "me_state_read", "me_state_write", "me_model_info", "me_api_version"} <= api
    path = native.library_path()
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[1:2] and
                line.split()[1] in "TtDdBbRrWwVvi"}
    exported = {name for name in exported if not name.startswith("_")}  # _init / _fini / _edata and friends
    assert exported == api, f"library only: {sorted(exported - api)}, header only: {sorted(api - exported)}"
    assert native.api_version()[0] == native.API_MAJOR


def test_corrupt_truncated_and_non_finite_are_refused(exported):
    _, _, mebin, _ = exported("maml")
    data = mebin.read_bytes()
    cases = {"truncated": data[:-4], "crc": data[:100] + bytes([data[100] ^ 1]) + data[101:],
             "magic": b"XXXX" + data[4:], "version": data[:4] + b"\x09\x00" + data[6:]}
    for status, blob in cases.items():
        with pytest.raises(native.NativeError) as err:
            native.NativeModel(blob)
        assert err.value.status == status
    model = native.NativeModel(data)
    xs, ys = np.linspace(-1, 1, 5, dtype=np.float32)[:, None], np.zeros((5, 1), np.float32)
    for bad_x, bad_y in ((xs.copy(), ys), (xs, ys.copy())):
        (bad_x if bad_x is not xs else bad_y)[2, 0] = np.nan
        with pytest.raises(native.NativeError, match="NaN") as err:
            model.adapt(bad_x, bad_y)
        assert err.value.status == "nonfinite"
    with pytest.raises(native.NativeError) as err:
        model.predict(model.theta0, np.array([[np.inf]], np.float32))
    assert err.value.status == "nonfinite"


# --- 1-D conv nets (prototype bundles) ---------------------------------------------------------------------


def _conv_run(root: Path, norm: str = "batch", length: int = 32, algo: str = "protonet") -> Path:
    config = TrainConfig(family="native-waves", family_options={"length": length}, algo=algo, model="conv1d", width=8,
                         norm=norm, shots=2, queries=2, meta_batch=1, iterations=5, inner_lr=0.1, log_every=1000)
    return train(config, root / "run", progress=False)


@pytest.mark.parametrize("norm,length", [("batch", 32), ("none", 32), ("batch", 31)])
def test_conv1d_prototypes_match_onnx_runtime(tmp_path, norm, length):
    """A conv1d ProtoNet (batch norm folded at export, or none; an odd length that the pools floor) runs in the C
    library to 1e-5 of ONNX Runtime, with (n, C, L) and (n, C * L) inputs; export_bundle checks the same."""
    run_dir = _conv_run(tmp_path, norm, length)
    bundle = export_bundle(run_dir, tmp_path / "bundle", formats="all")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["firmware"]["mebin"] == "model.mebin" and manifest["native_parity"]["max_abs_difference"] <= 1e-5
    mebin = (bundle / "model.mebin").read_bytes()
    assert mebin[4] == 2  # conv layers: format version 2 (MLP files stay version 1)
    kinds = [mebin[64 + 16 * i] for i in range(int.from_bytes(mebin[20:22], "little"))]
    assert kinds == [6, 2, 7] * 4  # conv (batch norm folded), relu, pool; the flatten is the layout itself
    c_model, onnx_model = Model.load(bundle, backend="native"), Model.load(bundle, backend="onnxruntime")
    assert c_model.backend == "native" and onnx_model.backend == "onnxruntime"
    raw = native.NativeModel(mebin, max_shots=3)
    assert raw.input_shape == (3, length)
    run = Run.load(run_dir)
    batch = _tasks(run)
    for i in range(len(batch.x_support)):
        xs, ys, xq = batch.x_support[i], batch.y_support[i], batch.x_query[i]
        assert xq.shape[1:] == (3, length)
        want = onnx_model.adapt(xs, ys).logits(xq)
        np.testing.assert_allclose(c_model.adapt(xs, ys).logits(xq), want, rtol=0, atol=1e-5)
        theta, _ = raw.adapt(xs.reshape(len(xs), -1), ys)  # flat inputs, in_dim = C * L
        np.testing.assert_allclose(raw.logits(theta, xq), want, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(raw.logits(theta, xq[0]), raw.logits(theta, xq[:1]))  # one (C, L) sample
    with torch.no_grad():  # and against PyTorch's eval-mode embedding
        z = run.learner.embed(run.state, torch.from_numpy(batch.x_query[0])).numpy()
    theta, _ = raw.adapt(batch.x_query[0], np.arange(len(z)) % len(z))
    np.testing.assert_allclose(theta.reshape(len(z), -1), z, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, 3, " + str(length) + r"\)"):
        raw.logits(theta, np.zeros((2, 3, length + 1), np.float32))


def _per_shot_bound(model: native.NativeModel) -> int:
    """What one more support sample may add to a prototype arena: its class's prototype and count (a sample may
    be a class of its own), plus alignment slack."""
    return 4 * (model.header.out_dim + 1)


def test_prototype_arena_does_not_grow_with_activations(exported, tmp_path):
    """Prototype sessions embed one sample at a time and read frozen weights in place: the arena grows with
    max_shots by a prototype and a count per sample only, for MLP and conv1d embeddings; MLP sessions that
    adapt keep their per-sample activations (the sinusoid MAML arena is as before)."""
    _, _, mebin, _ = exported("protonet")
    conv = export_bundle(_conv_run(tmp_path), tmp_path / "bundle", formats="all")
    for data in (mebin.read_bytes(), (conv / "model.mebin").read_bytes()):
        model = native.NativeModel(data, max_shots=1)
        one, many = model.arena_bytes(1), model.arena_bytes(1000)
        assert many - one <= 999 * _per_shot_bound(model) + 32
        weights = 4 * model.header.n_params
        assert one < weights + 4 * 1024  # no copy of the weights: at most norm, one sample's blocks and slack
    maml = native.NativeModel(exported("maml")[2].read_bytes(), max_shots=1)
    assert maml.arena_bytes(64) - maml.arena_bytes(1) >= 63 * 4 * 16  # still per-sample activations


def test_conv1d_prototypes_many_shots_match_onnx_runtime(tmp_path):
    """More support samples than any earlier arena sizing assumed, one at a time: still 1e-5 of ONNX Runtime."""
    run_dir = _conv_run(tmp_path)
    bundle = export_bundle(run_dir, tmp_path / "bundle", formats="all")
    c_model = native.NativeModel((bundle / "model.mebin").read_bytes(), max_shots=2)
    onnx_model = Model.load(bundle, backend="onnxruntime")
    batch = _tasks(Run.load(run_dir))
    xs = np.concatenate([*batch.x_support, *batch.x_query])
    ys = np.concatenate([*batch.y_support, *batch.y_query])
    xs, ys = np.concatenate([xs] * 4), np.concatenate([ys] * 4)
    assert len(xs) >= 32
    want = onnx_model.adapt(xs, ys)
    theta, _ = c_model.adapt(xs, ys)  # grows the arena to len(xs) shots
    np.testing.assert_allclose(theta, want.theta, rtol=0, atol=1e-5)
    np.testing.assert_allclose(c_model.logits(theta, xs), want.logits(xs), rtol=0, atol=1e-4)


def test_conv1d_refusals(tmp_path):
    """A MAML conv1d run is refused for firmware naming the layer; ``formats="auto"`` falls back to ONNX; group
    norm is refused with its own sentence."""
    run_dir = _conv_run(tmp_path / "maml", norm="none", algo="maml")
    with pytest.raises(ValueError, match=r"layer 'body\.0' \(Conv1d\): the C runtime runs 1-D convolutions in "
                                         r"prototype \(ProtoNet\) bundles only"):
        export_bundle(run_dir, tmp_path / "c", formats="c")
    assert not (tmp_path / "c").exists()
    bundle = export_bundle(run_dir, tmp_path / "auto", formats="auto")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["firmware"] == {} and "Conv1d" in manifest["firmware_skipped"]
    assert not (bundle / "model.mebin").exists()
    group = _conv_run(tmp_path / "group", norm="group")
    with pytest.raises(ValueError, match=r"layer 'body\.1' \(GroupNorm\).*--norm batch or --norm none"):
        write_firmware(Run.load(group), tmp_path / "group-fw")


# --- C builds -------------------------------------------------------------------------------------------------


def _cmake(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(["cmake", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _build(preset: str) -> Path:
    _cmake("--preset", preset)
    _cmake("--build", "--preset", preset, "-j2")
    return ROOT / "build" / preset


def _host_example() -> str:
    need("host")
    build = _build("host-release")
    return subprocess.run([build / "examples/firmware/firmware_example"], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_ctest_host_release():
    need("host")
    _build("host-release")
    out = subprocess.run(["ctest", "--preset", "host-release"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "100% tests passed" in out.stdout


def test_aarch64_ctest_under_qemu():
    need("aarch64")
    build = _build("aarch64-linux")
    assert "aarch64" in subprocess.run(["file", build / "runtime/c/test_model"], capture_output=True,
                                       text=True).stdout.lower().replace("arm aarch64", "aarch64")
    out = subprocess.run(["ctest", "--preset", "aarch64-linux"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "100% tests passed" in out.stdout, out.stdout[-4000:]


def test_cortex_m4_example_prints_the_host_numbers():
    need("cortex-m4")
    host = _host_example()
    build = _build("cortex-m4")
    elf = build / "examples/firmware/firmware_example.elf"
    out = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config",
                          "enable=on,target=native", "-kernel", str(elf)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "predicted" in host and out.stdout.replace("\r", "") == host


def test_fuzz_target_short_run(tmp_path):
    need("fuzz")
    build = tmp_path / "fuzz"
    _cmake("-S", str(ROOT), "-B", str(build), "-DCMAKE_C_COMPILER=clang", "-DMETAEDGE_FUZZ=ON",
           "-DMETAEDGE_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    _cmake("--build", str(build), "--target", "me_fuzz", "-j2")
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "runtime/c/fuzz/corpus", corpus)
    out = subprocess.run([build / "runtime/c/me_fuzz", "-runs=30000", "-seed=7", str(corpus)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert out.returncode == 0 and "Done 30000 runs" in out.stderr, out.stderr[-3000:]
    # adapted states (format 2) for the example's model
    _cmake("--build", str(build), "--target", "me_fuzz_state", "-j2")
    states = tmp_path / "states"
    shutil.copytree(ROOT / "runtime/c/fuzz/state_corpus", states)
    out = subprocess.run([build / "runtime/c/me_fuzz_state", "-runs=30000", "-seed=7", str(states)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert out.returncode == 0 and "Done 30000 runs" in out.stderr, out.stderr[-3000:]
