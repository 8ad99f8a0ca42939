"""The backend registry and protocol: a toy numpy backend added in one file runs a bundle like ONNX Runtime."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metaedge.runtime.backends import backend_names, get_backend, guarded_steps, kept_steps, register_backend
from metaedge.runtime.bundle import BundleError
from metaedge.runtime.model import Model, backend_choices

ROOT = Path(__file__).resolve().parents[1]


def _toy():
    """``examples/numpy_backend.py``, imported as a user's module (which registers it)."""
    if "numpy_backend" not in sys.modules:
        spec = importlib.util.spec_from_file_location("numpy_backend", ROOT / "examples" / "numpy_backend.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["numpy_backend"] = module
        spec.loader.exec_module(module)
    return sys.modules["numpy_backend"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A tanh sinusoid MAML bundle (ONNX graphs only) and a ridge one (Gauss-Newton: not for the toy)."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.train import TrainConfig, train

    work = tmp_path_factory.mktemp("backends")
    run = train(TrainConfig(family="sinusoid", algo="maml", shots=5, queries=5, meta_batch=4, iterations=10,
                            hidden=[16, 16], activation="tanh", inner_steps=2, inner_lr=0.05), work / "run",
                progress=False)
    ridge = train(TrainConfig(family="sinusoid", algo="ridge", shots=5, queries=5, meta_batch=2, iterations=2,
                              hidden=[8]), work / "ridge", progress=False)
    return (export_bundle(run, work / "maml.meb", formats="onnx", check=False),
            export_bundle(ridge, work / "ridge.meb", formats="onnx", check=False))


def _unit(seed: int, k: int = 5):
    from metaedge.sdk.tasks import make_family

    t = make_family("sinusoid").sample_task(np.random.default_rng(seed), k, 20)
    return t.x_support, t.y_support, t.x_query


def test_built_ins_are_registered_and_the_cli_lists_the_registry():
    assert backend_names()[:3] == ("native", "onnxruntime", "tensorrt")
    _toy()
    assert "numpy-mlp" in backend_names() and backend_choices()[0] == "auto"
    from metaedge.cli import RegistryChoice, _backends

    assert tuple(RegistryChoice(_backends).choices) == backend_choices()
    with pytest.raises(ValueError, match="unknown backend 'nope'; choose one of auto, native, onnxruntime"):
        get_backend("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_backend("onnxruntime", get_backend("native"))
    with pytest.raises(ValueError, match="not 'auto'"):
        register_backend("auto", get_backend("native"))


@pytest.mark.parametrize("guard", [True, False])
def test_toy_backend_adapts_and_predicts_like_onnx_runtime(bundles, guard):
    _toy()
    maml, _ = bundles
    toy = Model.load(maml, backend="numpy-mlp", guard=guard)
    ort = Model.load(maml, backend="onnxruntime", guard=guard)
    assert toy.backend == "numpy-mlp" and type(toy.runner).__name__ == "NumpyMLPBackend"
    for seed in range(3):
        xs, ys, xq = _unit(seed)
        for steps in (0, 1, 2, 4):  # 2: ONNX Runtime's unrolled graph; the others its single steps
            a, b = toy.adapt(xs, ys, steps=steps), ort.adapt(xs, ys, steps=steps)
            assert a.steps_kept == b.steps_kept
            np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(a.predict(xq), b.predict(xq), rtol=1e-4, atol=1e-5)
        again = toy.adapt(xs, ys, steps=1, start=a.theta)  # continuing from a state
        np.testing.assert_allclose(again.theta, ort.adapt(xs, ys, steps=1, start=a.theta).theta, atol=1e-5)


def test_model_keeps_validation_for_every_backend(bundles):
    _toy()
    toy = Model.load(bundles[0], backend="numpy-mlp")
    with pytest.raises(ValueError, match="NaN or infinite"):
        toy.adapt(np.array([[0.0], [np.nan]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"must have shape \(n, 1\)"):
        toy.adapt(np.zeros((2, 3)), np.zeros((2, 1)))


def test_a_backend_refuses_a_bundle_it_cannot_run_with_one_sentence(bundles):
    _toy()
    with pytest.raises(BundleError, match="ridge.meb: the numpy-mlp backend runs MLP regression bundles"):
        Model.load(bundles[1], backend="numpy-mlp")
    with pytest.raises(BundleError, match="has no model.mebin for the native backend"):
        Model.load(bundles[0], backend="native")


def test_cli_adapts_with_a_registered_backend(bundles, tmp_path):
    _toy()
    from metaedge.cli import main

    xs, ys, _ = _unit(7)
    support = tmp_path / "support.csv"
    support.write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in zip(xs.ravel(), ys.ravel())))
    result = CliRunner().invoke(main, ["adapt", str(bundles[0]), "--support", str(support), "--out",
                                       str(tmp_path / "s.npz"), "--backend", "numpy-mlp"])
    assert result.exit_code == 0, result.output
    assert "state written to" in result.output


def test_guard_rule_against_a_hand_run_loop():
    """Support losses 4 (at theta 0), 3, 5, 1: the guard keeps the first step and refuses the second, which raised
    the loss; unguarded every step is kept. The unrolled rule says the same from the loss list."""
    losses = [4.0, 3.0, 5.0, 1.0]

    def step(t):  # theta -> (theta + 1, support loss at theta)
        return t + 1, losses[int(t[0])]

    def at(t):
        return losses[int(t[0])]

    theta, kept = guarded_steps(step, at, np.zeros(1), 3, guard=True)
    assert (theta[0], kept) == (1.0, 1)
    theta, kept = guarded_steps(step, at, np.zeros(1), 3, guard=False)
    assert (theta[0], kept) == (3.0, 3)
    assert guarded_steps(step, at, np.zeros(1), 1, guard=True)[1] == 1  # the last step is checked with at()
    assert kept_steps(np.array(losses), 3, guard=True) == 1 and kept_steps(np.array(losses), 3, guard=False) == 3
    assert kept_steps(np.array([4.0, np.nan, 1.0]), 2, guard=True) == 0
