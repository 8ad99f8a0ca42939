"""Export -> bundle -> torch-free runtime: parity, guards, atomic state, and refusal of bad bundles and inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from isolation import run_without

from metaedge.export.bundle import export_bundle
from metaedge.runtime.bundle import BundleError
from metaedge.runtime.model import Adapted, Model
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.train import train


@pytest.fixture(scope="module")
def bundle(small_bundle):
    """The session's small sensor-pressure Meta-SGD bundle (its run directory beside it as ``run``)."""
    return small_bundle


def _unit(seed=0, k=3):
    from metaedge.sdk.tasks import make_family

    t = make_family("sensor-pressure").sample_task(np.random.default_rng(seed), k, 50)
    return t.x_support, t.y_support, t.x_query, t.y_query


def test_bundle_contents_and_parity(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"forward.onnx", "adapt_step.onnx", "adapt_steps.onnx", "adapt_predict.onnx",
                                      "theta0.npy", "rates.npy", "model.mebin",
                                      "model_data.h"}  # --format auto: an MLP gets both
    assert manifest["native_parity"]["max_scaled_difference"] <= 1e-5
    assert manifest["parity_max_relative_difference"] <= 1e-5
    assert manifest["normalization"]["x_std"][0] > 1 and manifest["adaptation"]["inner_steps"] == 2
    ops = manifest["ops"]
    assert ops["adapt_step.onnx"]["outside_tensorrt"] == [] and "Gemm" in ops["forward.onnx"]["ops"]


def test_backend_choice(bundle, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="metaedge.runtime"):
        auto = Model.load(bundle)
    assert auto.backend == "native" and auto.device in ("cpu-x86_64", "cpu-aarch64")
    assert "native backend" in caplog.text and "the first of cpu-" in caplog.text
    ort_model = Model.load(bundle, backend="onnxruntime")
    xs, ys, xq, _ = _unit(6)
    a, b = auto.adapt(xs, ys, steps=3), ort_model.adapt(xs, ys, steps=3)
    assert a.steps_kept == b.steps_kept
    np.testing.assert_allclose(a.logits(xq), b.logits(xq), atol=1e-5)
    np.testing.assert_allclose(a.predict(xq), b.predict(xq), rtol=1e-5, atol=1e-3)
    onnx_only = export_bundle(bundle.parent / "run", tmp_path / "onnx.meb", formats="onnx")
    assert Model.load(onnx_only).backend == "onnxruntime"
    with pytest.raises(BundleError, match="no model.mebin"):
        Model.load(onnx_only, backend="native")
    with pytest.raises(ValueError, match="unknown backend"):
        Model.load(bundle, backend="gpu")


@pytest.mark.parametrize("guard", [False, True])
def test_unrolled_graph_equals_single_steps(bundle, guard):
    model = Model.load(bundle, guard=guard, backend="onnxruntime")
    xs, ys, xq, _ = _unit(2)
    one_call = model.adapt(xs, ys, steps=2)  # the bundle's default: adapt_steps.onnx
    assert model.runner._steps is not None
    model.runner._steps = None  # force the single-step graph
    stepwise = model.adapt(xs, ys, steps=2)
    assert one_call.steps_kept == stepwise.steps_kept
    np.testing.assert_allclose(one_call.predict(xq), stepwise.predict(xq), rtol=1e-5, atol=1e-5)


def test_adapt_predict_save_load(bundle, tmp_path):
    model = Model.load(bundle)
    xs, ys, xq, yq = _unit()
    adapted = model.adapt(xs, ys, steps=5)
    pred = adapted.predict(xq)
    assert pred.shape == yq.shape and np.isfinite(pred).all()
    # the guard keeps the steps before the first that raised the support loss: recount them from unguarded runs
    free = Model.load(bundle, guard=False, backend="onnxruntime")
    runs = [free.adapt(xs, ys, steps=k) for k in range(6)]
    y_mean, y_std = (np.asarray(v) for v in (free.bundle.manifest.normalization.y_mean,
                                              free.bundle.manifest.normalization.y_std))
    losses = [float(np.mean((r.logits(xs) - (ys - y_mean) / y_std) ** 2)) for r in runs]
    kept = next((k - 1 for k in range(1, 6) if not losses[k] <= losses[k - 1]), 5)
    assert adapted.steps_kept == kept, (losses, kept)
    np.testing.assert_allclose(adapted.predict(xq), runs[kept].predict(xq), rtol=1e-4, atol=1e-3)
    state = tmp_path / "state.npz"
    adapted.save(state)
    again = Adapted.load(model, state)
    np.testing.assert_array_equal(again.predict(xq), pred)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


@pytest.mark.parametrize(
    "xs,ys,message",
    [
        (np.full((3, 2), np.nan), np.ones((3, 1)), r"NaN or infinite values \(sample\(s\) 1, 2, 3\)"),
        (np.ones((3, 2)), np.array([[1.0], [np.inf], [2.0]]), r"targets hold NaN or infinite values \(sample\(s\) 2\)"),
        (np.ones((3, 3)), np.ones((3, 1)), "must have shape"),
        (np.ones((0, 2)), np.ones((0, 1)), "must have shape"),
        (np.ones((3, 2)), np.ones((2, 1)), "support targets must hold"),
    ],
)
def test_bad_support_is_refused_with_one_sentence(bundle, xs, ys, message):
    with pytest.raises(ValueError, match=message):
        Model.load(bundle).adapt(xs, ys)


def test_tampered_missing_and_newer_bundles_are_refused(bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    rates = bad / "rates.npy"
    data = bytearray(rates.read_bytes())
    data[-1] ^= 0xFF
    rates.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its sha256"):
        Model.load(bad)
    rates.unlink()
    with pytest.raises(BundleError, match="rates.npy is missing"):
        Model.load(bad)
    shutil.rmtree(bad)
    shutil.copytree(bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99"):
        Model.load(bad)
    with pytest.raises(BundleError, match="no manifest.json"):
        Model.load(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        Model.load(tmp_path / "nowhere.meb")


@pytest.mark.parametrize("backend", ["onnxruntime", "native"])
def test_runtime_runs_with_torch_onnx_and_sdk_unimportable(bundle, backend):
    result = run_without(f"""
        import numpy as np
        from metaedge.runtime.model import Model
        m = Model.load({str(bundle)!r}, backend={backend!r})
        a = m.adapt(np.array([[30.0, 25.0], [50.0, 30.0], [70.0, 40.0]]), np.array([[10.0], [40.0], [70.0]]))
        print(a.predict(np.array([[60.0, 30.0]])).shape)
        assert not any(k.split(".")[0] in ("torch", "onnx") for k in sys.modules), "torch or onnx got imported"
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 1)" in result.stdout


def test_cli_export_adapt_predict(bundle, tmp_path):
    from click.testing import CliRunner

    from metaedge.cli import main

    runner = CliRunner()
    run = bundle.parent / "run"
    result = runner.invoke(main, ["export", str(run), "-o", str(tmp_path / "b")])
    assert result.exit_code == 0 and "parity with PyTorch" in result.output, result.output
    result = runner.invoke(main, ["export", str(run), "-o", str(tmp_path / "b")])
    assert result.exit_code == 1 and "already exists" in result.output
    xs, ys, xq, _ = _unit(1)
    (tmp_path / "support.csv").write_text("bridge_output,temperature,pressure\n" + "\n".join(
        f"{a},{b},{c}" for (a, b), (c,) in zip(xs, ys)))
    (tmp_path / "x.csv").write_text("bridge_output,temperature\n" + "\n".join(f"{a},{b}" for a, b in xq[:4]))
    state = tmp_path / "state.npz"
    result = runner.invoke(main, ["adapt", str(tmp_path / "b"), "--support", str(tmp_path / "support.csv"),
                                  "--out", str(state)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["predict", str(tmp_path / "b"), "--state", str(state), "--input",
                                  str(tmp_path / "x.csv")])
    assert result.exit_code == 0 and result.stdout.startswith("pressure\n") and len(result.stdout.splitlines()) == 5
    (tmp_path / "bad.csv").write_text("bridge_output,pressure\n1,2\n")
    result = runner.invoke(main, ["adapt", str(tmp_path / "b"), "--support", str(tmp_path / "bad.csv"),
                                  "--out", str(state)])
    assert result.exit_code == 1 and "lacks column(s) temperature" in result.output


def test_cli_bench_reports_percentiles(bundle):
    from click.testing import CliRunner

    from metaedge.cli import main

    result = CliRunner().invoke(main, ["bench", str(bundle), "--repeats", "5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["adapt_ms"]["p50"] > 0 and report["predict_ms"]["p99"] >= report["predict_ms"]["p50"]
    assert report["steps"] == 2 and report["peak_rss_mib"] > 0


def test_device_demo_script_calibrates_a_unit(bundle, tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "device_demo.py"
    result = subprocess.run([sys.executable, str(script), str(bundle), "--family", "sensor-pressure", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metaedge runtime (meta-learned)" in result.stdout and "classic 2-point linear" in result.stdout
    assert (tmp_path / "unit.png").is_file() and (tmp_path / "state.npz").is_file()


def test_zipped_bundle_round_trip_and_bad_archives(bundle, tmp_path):
    import zipfile

    from metaedge.export.bundle import export_bundle

    zipped = export_bundle(bundle.parent / "run", tmp_path / "model.meb.zip")
    xs, ys, xq, _ = _unit(4)
    a = Model.load(zipped).adapt(xs, ys).predict(xq)
    b = Model.load(bundle).adapt(xs, ys).predict(xq)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    import gc

    from metaedge.runtime.bundle import Bundle

    opened = Bundle.open(zipped)  # the unpacked copy lives as long as the Bundle object
    private = opened.path
    assert private.is_dir() and private != zipped
    del opened
    gc.collect()
    assert not private.exists()
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(zipped.read_bytes()[:200])
    with pytest.raises(BundleError, match="neither a bundle directory nor a readable zip"):
        Model.load(corrupt)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escaped.txt", "x")
    with pytest.raises(BundleError, match="outside the bundle"):
        Model.load(evil)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_ridge_bundle_solves_on_the_device(tmp_path):
    """Gauss-Newton learners ship the Jacobian graph; the runtime's float64 solve matches PyTorch's step."""
    import torch

    from metaedge.sdk.run import Run

    run = train(TrainConfig(family="sensor-pressure", algo="ridge", shots=3, queries=5, meta_batch=4, iterations=10,
                            hidden=[16, 16], activation="tanh", skip=True), tmp_path / "run", progress=False)
    path = export_bundle(run, tmp_path / "ridge.meb")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["adaptation"]["solver"] == "gauss-newton" and "gauss_newton.onnx" in manifest["files"]
    assert "adapt_step.onnx" not in manifest["files"] and manifest["parity_max_relative_difference"] <= 1e-5
    model, loaded = Model.load(path), Run.load(run)
    for k in (3, 8):  # dynamic support size
        xs, ys, xq, _ = _unit(k, k)
        adapted = model.adapt(xs, ys)
        nb = loaded.normalizer
        ref = loaded.learner.predictions_after_steps(
            loaded.state, *(torch.as_tensor(a)[None] for a in (nb.x(xs), nb.y(ys), nb.x(xq))), [1])[1]
        np.testing.assert_allclose(adapted.predict(xq), nb.y_inverse(ref.detach().numpy()[0]), rtol=1e-5, atol=1e-4)
        assert adapted.steps_kept == 1


def test_export_adapt_override_ships_only_the_named_parameters(bundle, tmp_path):
    run = bundle.parent / "run"
    path = export_bundle(run, tmp_path / "biases.meb", adapt="biases")
    manifest = json.loads((path / "manifest.json").read_text())
    names = [p["name"] for p in manifest["adaptation"]["parameters"]]
    assert names and all(n.endswith(".bias") for n in names) and manifest["adaptation"]["spec"] == "biases"
    assert manifest["parity_max_relative_difference"] <= 1e-5
    xs, ys, xq, _ = _unit(3)
    model = Model.load(path)
    assert model.theta0.size == sum(p["size"] for p in manifest["adaptation"]["parameters"])
    before, after = model.adapt(xs, ys, steps=0), model.adapt(xs, ys, steps=3)
    assert after.steps_kept == 3  # moving the biases alone still fits the support points better at every step
    assert np.mean((after.predict(xs) - ys) ** 2) < np.mean((before.predict(xs) - ys) ** 2)
    with pytest.raises(ValueError, match="selects no parameter"):
        export_bundle(run, tmp_path / "none.meb", adapt="nothing.*")
    assert not (tmp_path / "none.meb").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "native"])
def test_adapt_continues_from_an_earlier_state(bundle, backend):
    model = Model.load(bundle, guard=False, backend=backend)
    xs, ys, xq, _ = _unit(5)
    two = model.adapt(xs, ys, steps=2)
    one = model.adapt(xs, ys, steps=1)
    again = model.adapt(xs, ys, steps=1, start=one.theta)
    np.testing.assert_allclose(again.predict(xq), two.predict(xq), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="start must be a finite adapted state"):
        model.adapt(xs, ys, steps=1, start=one.theta[:-1])


def test_cli_devices_and_device_option(bundle, tmp_path):
    from click.testing import CliRunner

    from metaedge.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["devices"])
    assert listed.exit_code == 0 and "jetson-orin-nano" in listed.stdout and "detected:" in listed.stdout
    bench = runner.invoke(main, ["bench", str(bundle), "--device", "cpu-x86_64", "--repeats", "3", "--json"])
    assert bench.exit_code == 0, bench.output
    assert json.loads(bench.stdout)["device"] == "cpu-x86_64" and "backend for" in bench.stderr
    forced = runner.invoke(main, ["bench", str(bundle), "--backend", "onnxruntime", "--repeats", "3", "--json"])
    assert json.loads(forced.stdout)["backend"] == "onnxruntime"
    onnx_only = export_bundle(bundle.parent / "run", tmp_path / "onnx.meb", formats="onnx")
    refused = runner.invoke(main, ["bench", str(onnx_only), "--device", "cortex-m4"])
    assert refused.exit_code == 1 and "does not fit cortex-m4" in refused.output
    unknown = runner.invoke(main, ["bench", str(bundle), "--device", "toaster"])
    assert unknown.exit_code == 1 and "toaster" in unknown.output and "cpu-x86_64" in unknown.output
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:  # where TensorRT exists, tests/test_tensorrt.py builds engines
        trt = runner.invoke(main, ["export", str(bundle.parent / "run"), "-o", str(tmp_path / "t.meb"), "--format",
                                   "tensorrt", "--device", "jetson-orin-nano", "--no-check"])
        assert trt.exit_code == 1 and "TensorRT is not installed" in trt.output and not (tmp_path / "t.meb").exists()
