"""The hand-derived MLP meta-gradient (`sdk/learners/mlp_fast.py`) against eager autograd; the trainer's choice."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.learners import make_learner
from metaedge.sdk.learners.mlp_fast import FastMLPMetaGradient, fast_meta_gradient, plan_for
from metaedge.sdk.models import build_model
from metaedge.sdk.train import meta_gradient_for, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _learner(algo: str, activation: str = "relu", skip: bool = False, steps: int = 1, dtype=torch.float64,
             loss: str = "mse", hidden=(8, 6), out_dim: int = 2, adapt: str | None = None):
    torch.manual_seed(1)
    model = build_model({"kind": "mlp", "in_dim": 3, "out_dim": out_dim, "hidden": list(hidden),
                         "activation": activation, "skip": skip}).to(dtype)
    learner = make_learner(algo, model, loss=loss, inner_lr=0.2, inner_steps=steps, adapt=adapt)
    state = learner.init_state()
    if algo == "metasgd":  # learned rates differ per entry; make them so
        state["rates"] = {n: r * (0.5 + torch.rand_like(r)) for n, r in state["rates"].items()}
    return learner, state


def _tasks(dtype, loss: str = "mse", out_dim: int = 2, tasks: int = 5):
    g = torch.Generator().manual_seed(2)
    xs, xq = torch.randn(tasks, 4, 3, generator=g, dtype=dtype), torch.randn(tasks, 6, 3, generator=g, dtype=dtype)
    if loss == "mse":
        ys = torch.randn(tasks, 4, out_dim, generator=g, dtype=dtype)
        yq = torch.randn(tasks, 6, out_dim, generator=g, dtype=dtype)
    else:
        ys, yq = torch.randint(0, out_dim, (tasks, 4), generator=g), torch.randint(0, out_dim, (tasks, 6), generator=g)
    return xs, ys, xq, yq


def _max_diff(reference, other) -> tuple[float, float]:
    """Max abs difference over every gradient tensor, and the largest reference magnitude."""
    assert {k: set(v) for k, v in reference.items()} == {k: set(v) for k, v in other.items()}
    diff = max((reference[k][n] - other[k][n]).abs().max().item() for k in reference for n in reference[k])
    scale = max(reference[k][n].abs().max().item() for k in reference for n in reference[k])
    return diff, scale


CASES = list(itertools.product(["maml", "fomaml", "metasgd", "anil", "reptile"], ["relu", "tanh", "sigmoid"],
                               [False, True],
                               [1, 5]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("algo", "activation", "skip", "steps"), CASES)
def test_fast_meta_gradient_equals_autograd(algo, activation, skip, steps, dtype):
    learner, state = _learner(algo, activation, skip, steps, dtype)
    data = _tasks(dtype)
    fast = fast_meta_gradient(learner)
    assert isinstance(fast, FastMLPMetaGradient)
    want, want_losses = learner.meta_gradient(state, *data, denominator=7)
    got, got_losses = fast(state, *data, denominator=7)
    diff, scale = _max_diff(want, got)
    assert scale > 1e-3  # a zero gradient would agree trivially
    assert diff <= (1e-10 if dtype == torch.float64 else 1e-5) * max(1.0, scale), diff
    assert (want_losses - got_losses).abs().max().item() <= (1e-12 if dtype == torch.float64 else 1e-6)
    assert not got_losses.requires_grad


@pytest.mark.parametrize(("algo", "loss", "hidden", "adapt"), [
    ("maml", "cross_entropy", (8, 6), None), ("metasgd", "cross_entropy", (5,), None), ("maml", "mse", (), None),
    ("maml", "mse", (8, 6, 4), "biases"), ("maml", "mse", (8, 6), "body.2.*"), ("metasgd", "mse", (8, 6), "head.*"),
    ("fomaml", "cross_entropy", (8, 6), "head"), ("reptile", "mse", (8, 6), "biases"),
])
def test_losses_depths_and_adaptation_specs(algo, loss, hidden, adapt):
    """Cross-entropy, no hidden layer or three, and partial adaptation (frozen parameters still get meta-gradients
    through the adapted ones, second order)."""
    learner, state = _learner(algo, "tanh", True, 3, loss=loss, hidden=hidden, out_dim=3, adapt=adapt)
    data = _tasks(torch.float64, loss, out_dim=3)
    want, _ = learner.meta_gradient(state, *data)
    got, _ = fast_meta_gradient(learner)(state, *data)
    diff, scale = _max_diff(want, got)
    assert scale > 1e-3 and diff <= 1e-10, diff


def test_what_the_fast_path_does_not_serve_goes_to_autograd():
    gelu, _ = _learner("maml", "gelu")
    ridge, _ = _learner("ridge")  # a MAML subclass whose inner loop is Gauss-Newton solves
    conv = make_learner("maml", build_model({"kind": "conv4", "in_channels": 1, "out_dim": 3, "width": 4,
                                             "input_size": 8}), loss="cross_entropy")
    for learner in (gelu, ridge, conv):
        assert plan_for(learner) is None
        assert meta_gradient_for(TrainConfig(), learner) == learner.meta_gradient
    maml, _ = _learner("maml")
    assert isinstance(meta_gradient_for(TrainConfig(), maml), FastMLPMetaGradient)
    assert meta_gradient_for(TrainConfig(compile=False), maml) == maml.meta_gradient


def test_targets_the_derivation_does_not_cover_use_the_eager_loss():
    """``(T, n)`` regression targets broadcast against ``(T, n, 1)`` outputs in the eager MSE; the fast path must
    give that same (odd) value, not its own reading of the shapes."""
    learner, state = _learner("maml", out_dim=1)
    xs, ys, xq, yq = _tasks(torch.float64, out_dim=1)
    want, _ = learner.meta_gradient(state, xs, ys[..., 0], xq, yq[..., 0])
    got, _ = fast_meta_gradient(learner)(state, xs, ys[..., 0], xq, yq[..., 0])
    assert _max_diff(want, got)[0] == 0.0


def _cfg(**kw) -> TrainConfig:
    base = dict(family="sinusoid", algo="maml", shots=5, queries=5, meta_batch=6, iterations=30, hidden=[16, 16],
                log_every=10, checkpoint_every=30, inner_steps=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("algo", ["maml", "metasgd", "reptile"])
def test_default_training_gives_the_weights_of_eager_autograd(tmp_path, algo):
    fast = train(_cfg(algo=algo), tmp_path / "fast", progress=False)
    eager = train(_cfg(algo=algo, compile=False), tmp_path / "eager", progress=False)
    wf, we = load_file(str(fast / "model.safetensors")), load_file(str(eager / "model.safetensors"))
    assert set(wf) == set(we)
    for k in we:
        assert (wf[k] - we[k]).abs().max().item() < 1e-5, k
    start = train(_cfg(algo=algo, iterations=1, compile=False), tmp_path / "start", progress=False)
    w0 = load_file(str(start / "model.safetensors"))
    assert max((we[k] - w0[k]).abs().max().item() for k in we) > 1e-3  # training moved the weights
    np.testing.assert_allclose(_losses(fast), _losses(eager), rtol=1e-4)


def _losses(run) -> list[float]:
    return [json.loads(line)["meta_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cli_flags_choose_the_path(tmp_path):
    """``metaedge train`` records ``compile`` as given: absent (the default path), ``--no-compile`` (eager autograd);
    both runs end at the same weights."""
    from click.testing import CliRunner

    from metaedge.cli import main

    args = ["train", "--family", "sinusoid", "--algo", "fomaml", "--iterations", "4", "--meta-batch", "3",
            "--hidden", "8,8", "--no-progress"]
    runner = CliRunner()
    for name, extra in (("default", []), ("eager", ["--no-compile"])):
        result = runner.invoke(main, [*args, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    recorded = {n: json.loads((tmp_path / n / "config.json").read_text())["train"]["compile"]
                for n in ("default", "eager")}
    assert recorded == {"default": None, "eager": False}
    wd, we = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("default", "eager"))
    assert max((wd[k] - we[k]).abs().max().item() for k in wd) < 1e-6
