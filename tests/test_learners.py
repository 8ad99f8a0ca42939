"""Meta-gradients: vmapped vs looped reference, and against float64 finite differences."""

from __future__ import annotations

import pytest
import torch

from metaedge.errors import InputError
from metaedge.sdk.learners import (
    ALGORITHMS,
    MAML,
    AdaptSpec,
    DeviceSolver,
    Learner,
    ProtoNet,
    make_learner,
    register_learner,
)
from metaedge.sdk.learners.newton import MIN_DAMPING
from metaedge.sdk.models import MLP

ALGOS = sorted(a for a in ALGORITHMS if ALGORITHMS[a].has_inner_loop)  # prototypes: test_classification_learners


def _learner(algo: str, dtype=torch.float32, steps: int = 2, inner_lr: float = 0.05, **kw):
    torch.manual_seed(0)
    model = MLP(1, 1, (16, 16), activation="tanh").to(dtype)
    return make_learner(algo, model, inner_lr=inner_lr, inner_steps=steps, **kw)


@pytest.mark.parametrize("algo", ALGOS)
def test_vmap_matches_loop(algo, sinusoid_batch):
    learner = _learner(algo)
    state = learner.init_state()
    g_vmap, l_vmap = learner.meta_gradient(state, *sinusoid_batch)
    g_loop, l_loop = learner.meta_gradient(state, *sinusoid_batch, batched=False)
    torch.testing.assert_close(l_vmap, l_loop, atol=1e-5, rtol=1e-5)
    for key in g_loop:
        for name in g_loop[key]:
            torch.testing.assert_close(g_vmap[key][name], g_loop[key][name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algo", ["maml", "metasgd", "anil"])
def test_second_order_matches_finite_differences(algo, sinusoid_batch):
    learner = _learner(algo, dtype=torch.float64)
    state = learner.init_state()
    batch = tuple(t.double() for t in sinusoid_batch)
    grads, _ = learner.meta_gradient(state, *batch)

    def objective(st):
        return sum(learner.task_objective(st, *t) for t in zip(*batch)) / batch[0].shape[0]

    eps = 1e-6
    for key in learner.trainable_keys():
        for name in list(state[key])[:3]:
            idx = (0,) * state[key][name].dim()
            plus = {g: {n: t.clone() for n, t in d.items()} for g, d in state.items()}
            minus = {g: {n: t.clone() for n, t in d.items()} for g, d in state.items()}
            plus[key][name][idx] += eps
            minus[key][name][idx] -= eps
            fd = (objective(plus) - objective(minus)) / (2 * eps)
            assert grads[key][name][idx].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-8), (key, name)


def test_first_order_gradient_is_query_gradient_at_adapted_params(sinusoid_batch):
    """FOMAML with one step: d/dtheta = grad of the query loss evaluated at theta' (Finn et al. Sec. 5.2)."""
    learner = _learner("fomaml", dtype=torch.float64, steps=1)
    state = learner.init_state()
    batch = tuple(t.double() for t in sinusoid_batch)
    grads, _ = learner.meta_gradient(state, *batch)
    expected = {n: torch.zeros_like(p) for n, p in state["params"].items()}
    for xs, ys, xq, yq in zip(*batch):
        fast, frozen = learner.split(state["params"])
        adapted = learner.inner.adapt(fast, frozen, state["rates"], xs, ys, 1)
        adapted = {k: v.detach().requires_grad_(True) for k, v in adapted.items()}
        loss = learner.inner.support_loss(adapted, frozen, xq, yq)
        for k, g in zip(adapted, torch.autograd.grad(loss, list(adapted.values()))):
            expected[k] += g / batch[0].shape[0]
    for name in expected:
        torch.testing.assert_close(grads["params"][name], expected[name])


def test_reptile_direction_is_init_minus_adapted(sinusoid_batch):
    learner = _learner("reptile", dtype=torch.float64, steps=3)
    state = learner.init_state()
    batch = tuple(t.double() for t in sinusoid_batch)
    grads, _ = learner.meta_gradient(state, *batch)
    fast, frozen = learner.split(state["params"])
    phis = [learner.inner.adapt(fast, frozen, state["rates"], xs, ys, 3) for xs, ys, _, _ in zip(*batch)]
    for name in fast:
        expected = torch.stack([fast[name] - p[name] for p in phis]).mean(0)
        torch.testing.assert_close(grads["params"][name], expected)


def test_anil_adapts_head_only_and_metasgd_learns_rates():
    anil = _learner("anil")
    assert anil.adapted == ["head.weight", "head.bias"]
    metasgd = _learner("metasgd")
    assert metasgd.trainable_keys() == ("params", "rates")
    assert set(metasgd.init_state()["rates"]) == set(metasgd.names)


def test_frozen_parameters_get_meta_gradient_but_do_not_adapt(sinusoid_batch):
    learner = _learner("maml", adapt="biases")
    state = learner.init_state()
    traj = learner.adapt_batch(state, sinusoid_batch[0], sinusoid_batch[1], 2)
    assert set(traj[-1]) == {"body.0.bias", "body.2.bias", "head.bias"}
    grads, _ = learner.meta_gradient(state, *sinusoid_batch)
    assert grads["params"]["body.0.weight"].abs().sum() > 0  # the outer loop still trains frozen weights


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("all", ["body.0.weight", "body.0.bias", "head.weight", "head.bias"]),
        ("head", ["head.weight", "head.bias"]),
        ("biases", ["body.0.bias", "head.bias"]),
        ("body.*.weight,head.bias", ["body.0.weight", "head.bias"]),
    ],
)
def test_adapt_spec(spec, expected):
    names = ["body.0.weight", "body.0.bias", "head.weight", "head.bias"]
    assert AdaptSpec(spec).select(names) == expected


def test_adapt_spec_that_selects_nothing_is_an_error():
    with pytest.raises(ValueError, match="selects no parameter"):
        AdaptSpec("conv*").select(["head.weight"])


def test_unknown_algorithm_is_an_error():
    with pytest.raises(ValueError, match="unknown meta-learning algorithm"):
        make_learner("mamlx", MLP(1, 1))


def test_guarded_adaptation_never_raises_the_support_loss(sinusoid_batch):
    learner = _learner("maml", inner_lr=5.0)  # a rate far too large: plain steps diverge
    state = learner.init_state()
    xs, ys = sinusoid_batch[0], sinusoid_batch[1]
    fast, frozen = learner.split(state["params"])

    def losses(traj):
        return [torch.stack([learner.inner.support_loss({k: v[t] for k, v in p.items()}, frozen, xs[t], ys[t])
                             for t in range(len(xs))]) for p in traj]

    plain = losses(learner.adapt_batch(state, xs, ys, 4))
    guarded = losses(learner.adapt_batch(state, xs, ys, 4, guard=True))
    assert (plain[-1] > plain[0]).any()
    for before, after in zip(guarded, guarded[1:]):
        assert (after <= before + 1e-6).all()


# --- what learners declare -----------------------------------------------------------------------------------------

#: name -> (has_inner_loop, task kinds, has_head, device solver of a learner built with inner_steps=3)
DECLARED = {
    "maml": (True, ("regression", "classification"), True, DeviceSolver("sgd", 3)),
    "fomaml": (True, ("regression", "classification"), True, DeviceSolver("sgd", 3)),
    "metasgd": (True, ("regression", "classification"), True, DeviceSolver("sgd", 3)),
    "anil": (True, ("regression", "classification"), True, DeviceSolver("sgd", 3)),
    "reptile": (True, ("regression", "classification"), True, DeviceSolver("sgd", 3)),
    "ridge": (True, ("regression",), True, DeviceSolver("gauss-newton", 3, min_damping=MIN_DAMPING)),
    "protonet": (False, ("classification",), False, DeviceSolver("prototypes", 0)),
}


@pytest.mark.parametrize("algo", sorted(DECLARED))
def test_each_learner_declares_what_export_and_the_evaluator_need(algo):
    cls = ALGORITHMS[algo]
    loss = "cross_entropy" if cls.task_kinds == ("classification",) else "mse"
    learner = make_learner(algo, MLP(2, 0 if not cls.has_head else 1, (4,)), loss=loss, inner_steps=3)
    assert isinstance(learner, Learner) and learner.name == algo
    assert (cls.has_inner_loop, cls.task_kinds, cls.has_head, learner.device_solver) == DECLARED[algo]


def test_protonet_is_not_a_maml_learner_and_the_base_is_abstract():
    assert not issubclass(ProtoNet, MAML)
    with pytest.raises(TypeError, match="abstract"):
        Learner(MLP(1, 1, (4,)), "mse")  # type: ignore[abstract]


@pytest.mark.parametrize("algo,loss", [("ridge", "cross_entropy"), ("protonet", "mse")])
def test_a_learner_refuses_a_task_kind_it_does_not_declare(algo, loss):
    with pytest.raises(InputError, match=f"the {algo} learner serves .* families, not"):
        make_learner(algo, MLP(2, 1, (4,)), loss=loss)


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="newton", steps=1), "unknown device solver 'newton'"),
    (dict(kind="prototypes", steps=2), "takes no steps"),
    (dict(kind="sgd", steps=0), "at least 1"),
    (dict(kind="sgd", steps=1, min_damping=1e-6), "gauss-newton solver only"),
    (dict(kind="gauss-newton", steps=1), "gauss-newton solver only"),
])
def test_device_solver_refuses_inconsistent_parameters(kwargs, message):
    with pytest.raises(InputError, match=message):
        DeviceSolver(**kwargs)


def test_a_registered_learner_is_built_by_name():
    @register_learner
    class HeadOnly(MAML):
        name = "test-head-only"
        default_adapt = "head"

    try:
        learner = make_learner("test-head-only", MLP(1, 1, (4,)))
        assert type(learner) is HeadOnly and learner.adapted == ["head.weight", "head.bias"]
        assert learner.device_solver == DeviceSolver("sgd", 1)
    finally:
        del ALGORITHMS["test-head-only"]
    with pytest.raises(InputError, match="unknown meta-learning algorithm 'test-head-only'"):
        make_learner("test-head-only", MLP(1, 1, (4,)))
