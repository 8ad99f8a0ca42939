"""Classification: Conv4 / Conv1d learners, batch norm under vmap, ProtoNets, and the ridge head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaedge.sdk.learners import make_learner
from metaedge.sdk.learners.protonet import prototype_logits, prototypes
from metaedge.sdk.models import build_model
from metaedge.sdk.tasks import EpisodicFamily


def _episodes(ways=3, shots=2, queries=2, tasks=3, shape=(1, 16, 16), seed=0, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ways * 6, *shape)).astype(np.float32)
    y = np.repeat(np.arange(ways), 6)
    fam = EpisodicFamily({"train": (x, y)}, ways=ways)
    b = fam.sample_batch(rng, tasks, shots, queries)
    return tuple(torch.as_tensor(a) if a.dtype != np.float32 else torch.as_tensor(a, dtype=dtype)
                 for a in (b.x_support, b.y_support, b.x_query, b.y_query))


def _conv(out_dim=3, norm="batch", dtype=torch.float32, dims=2):
    torch.manual_seed(0)
    kind = "conv4" if dims == 2 else "conv1d"
    return build_model({"kind": kind, "in_channels": 1, "out_dim": out_dim, "width": 4, "input_size": 16,
                        "norm": norm}).to(dtype)


@pytest.mark.parametrize("algo", ["maml", "fomaml", "metasgd", "anil"])
def test_conv4_batch_norm_meta_gradients_match_the_loop(algo):
    learner = make_learner(algo, _conv(), loss="cross_entropy", inner_lr=0.1, inner_steps=2)
    assert learner.vmap_tasks == (algo == "fomaml")  # second order through BN: looped (known vmap issue)
    state = learner.init_state()
    batch = _episodes()
    g_b, _ = learner.meta_gradient(state, *batch)
    g_l, _ = learner.meta_gradient(state, *batch, batched=False)
    for key in g_l:
        for name in g_l[key]:
            torch.testing.assert_close(g_b[key][name], g_l[key][name], atol=1e-5, rtol=1e-4)


def test_conv4_second_order_meta_gradient_matches_finite_differences():
    learner = make_learner("maml", _conv(dtype=torch.float64), loss="cross_entropy", inner_lr=0.1, inner_steps=1)
    state = learner.init_state()
    batch = _episodes(dtype=torch.float64)
    grads, _ = learner.meta_gradient(state, *batch)

    def objective(st):
        return sum(learner.task_objective(st, *t) for t in zip(*batch)) / batch[0].shape[0]

    eps = 1e-6
    for name in ("body.0.weight", "body.1.weight", "head.bias"):
        plus = {g: {n: t.clone() for n, t in d.items()} for g, d in state.items()}
        minus = {g: {n: t.clone() for n, t in d.items()} for g, d in state.items()}
        idx = (0,) * state["params"][name].dim()
        plus["params"][name][idx] += eps
        minus["params"][name][idx] -= eps
        fd = (objective(plus) - objective(minus)) / (2 * eps)
        assert grads["params"][name][idx].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9), name


def test_conv1d_group_norm_learner_runs_batched_and_matches_the_loop():
    learner = make_learner("maml", _conv(norm="group", dims=1), loss="cross_entropy", inner_lr=0.1)
    assert learner.vmap_tasks  # group norm has no batch statistics: second order is vmapped
    state = learner.init_state()
    batch = _episodes(shape=(1, 16))
    g_b, l_b = learner.meta_gradient(state, *batch)
    g_l, l_l = learner.meta_gradient(state, *batch, batched=False)
    torch.testing.assert_close(l_b, l_l, atol=1e-6, rtol=1e-5)
    for name in g_l["params"]:
        torch.testing.assert_close(g_b["params"][name], g_l["params"][name], atol=1e-5, rtol=1e-4)


def test_prototypes_and_logits_golden_values():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1])
    protos = prototypes(z, labels, 2)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    logits = prototype_logits(torch.tensor([[1.0, 1.0]]), protos)
    torch.testing.assert_close(logits, torch.tensor([[-1.0, -10.0]]))


def test_protonet_trains_and_keeps_running_statistics():
    model = _conv(out_dim=0)
    learner = make_learner("protonet", model, loss="cross_entropy")
    state = learner.init_state()
    assert "buffers" in state and any("running_mean" in n for n in state["buffers"])
    before = {n: b.clone() for n, b in state["buffers"].items()}
    batch = _episodes()
    grads, losses = learner.meta_gradient(state, *batch)
    assert set(grads["params"]) == set(state["params"]) and losses.shape == (3,)
    assert any(not torch.equal(before[n], state["buffers"][n]) for n in before)  # BN stats updated in place
    preds = learner.predictions_after_steps(state, batch[0], batch[1], batch[2], [0, 5])
    assert preds[0].shape == (3, 6, 3) and torch.equal(preds[0], preds[5])
    assert learner.can_predict(20)


def test_protonet_refuses_regression():
    with pytest.raises(ValueError, match="classification"):
        make_learner("protonet", _conv(out_dim=0), loss="mse")


def test_ridge_head_is_exact_least_squares_for_a_linear_model():
    """With a linear model, one Gauss-Newton step with tiny damping is ordinary least squares."""
    torch.manual_seed(0)
    model = build_model({"kind": "mlp", "in_dim": 2, "out_dim": 1, "hidden": [], "activation": "relu"})
    learner = make_learner("ridge", model, inner_lr=1e-9, inner_steps=1)
    state = learner.init_state()
    xs = torch.randn(1, 6, 2)
    ys = xs @ torch.tensor([[2.0], [-1.0]]) + 0.5
    fast = learner.adapt_batch(state, xs, ys, 1)[1]
    torch.testing.assert_close(fast["head.weight"][0], torch.tensor([[2.0, -1.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(fast["head.bias"][0], torch.tensor([0.5]), atol=1e-4, rtol=0)


def test_sample_rows_draw_the_same_episodes_as_sample_batch():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(7 * 5, 1, 4, 4), dtype=np.uint8)
    fam = EpisodicFamily({"train": (x, np.repeat(np.arange(7), 5))}, ways=3)
    a = fam.sample_batch(np.random.default_rng(11), 4, 2, 3, ways=4)
    rows = fam.sample_rows(np.random.default_rng(11), 4, 2, 3, ways=4)
    b = fam.batch_of(rows)
    for name in ("x_support", "y_support", "x_query", "y_query"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.info == b.info and rows.support.shape == (4, 8) and rows.query.shape == (4, 12)
    # the rows index the split's class-sorted inputs that arrays() returns
    np.testing.assert_array_equal(fam.arrays("train")[0][rows.query], a.x_query)


def _protonet_with_running_statistics(dims=2):
    learner = make_learner("protonet", _conv(out_dim=0, dims=dims), loss="cross_entropy")
    state = learner.init_state()
    shape = (1, 16, 16) if dims == 2 else (1, 16)
    for seed in range(3):  # training steps move the running statistics away from (0, 1)
        learner.meta_gradient(state, *_episodes(shape=shape, seed=seed))
    return learner, state


@pytest.mark.parametrize("dims", [2, 1])
def test_protonet_batched_embeddings_give_the_per_episode_predictions(dims):
    """The old evaluation path (each episode embedded on its own) against both new ones: all episodes embedded
    together, and the split embedded once with episodes drawn as rows of it."""
    from metaedge.sdk.evaluate.evaluator import SplitEmbeddings
    from metaedge.sdk.normalize import Normalizer

    learner, state = _protonet_with_running_statistics(dims)
    assert learner.embeds_samples
    rng = np.random.default_rng(5)
    shape = (1, 16, 16) if dims == 2 else (1, 16)
    x = rng.normal(size=(6 * 8, *shape)).astype(np.float32)
    fam = EpisodicFamily({"val": (x, np.repeat(np.arange(6), 8))}, ways=4)
    rows = fam.sample_rows(np.random.default_rng(9), 5, 2, 3, split="val")
    b = fam.batch_of(rows)
    xs, ys, xq = (torch.as_tensor(a) for a in (b.x_support, b.y_support, b.x_query))
    with torch.no_grad():
        reference = torch.stack([learner.episode_logits(state, a, c, d) for a, c, d in zip(xs, ys, xq)])
    batched = learner.predictions_after_steps(state, xs, ys, xq, [0])[0]
    split = SplitEmbeddings(learner, state, fam, "val", Normalizer.identity(0, 0)).logits(rows)
    scale = reference.abs().max()
    for logits in (batched, split):
        assert logits.shape == (5, 12, 4)
        torch.testing.assert_close(logits / scale, reference / scale, atol=1e-5, rtol=0)  # float32 rounding
        assert torch.equal(logits.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("dims", [2, 1])
def test_inference_model_folds_batch_norm_and_matches_evaluation_mode(dims):
    from metaedge.sdk.models.conv import inference_input, inference_model

    learner, state = _protonet_with_running_statistics(dims)
    tensors = {**state["params"], **state["buffers"]}
    fast = inference_model(learner.model, tensors)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    x = torch.randn(7, 1, 16, 16) if dims == 2 else torch.randn(7, 1, 16)
    with torch.no_grad():
        reference = learner.embed(state, x)
        out = fast(inference_input(x))
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    # the learner's own model is left as it was: not folded
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in learner.model.modules())


@pytest.mark.parametrize(("norm", "dims", "adapt"), [("batch", 2, "all"), ("batch", 2, "head"), ("group", 1, "all"),
                                                     ("none", 2, "all")])
def test_fomaml_task_batched_conv_meta_gradient_matches_the_task_loop(norm, dims, adapt):
    """forward_tasks (tasks side by side along the channels, plain autograd) against the per-task loop, float64."""
    learner = make_learner("fomaml", _conv(norm=norm, dims=dims, dtype=torch.float64), loss="cross_entropy",
                           inner_lr=0.1, inner_steps=2, adapt=adapt)
    assert learner.task_batched
    state = learner.init_state()
    batch = _episodes(shape=(1, 16, 16) if dims == 2 else (1, 16), dtype=torch.float64)
    g_b, l_b = learner.meta_gradient(state, *batch, denominator=5)
    g_l, l_l = learner.meta_gradient(state, *batch, denominator=5, batched=False)
    torch.testing.assert_close(l_b, l_l, atol=1e-12, rtol=1e-10)
    assert set(g_b["params"]) == set(state["params"])
    for name in g_l["params"]:
        torch.testing.assert_close(g_b["params"][name], g_l["params"][name], atol=1e-12, rtol=1e-9)


def test_forward_tasks_is_vmap_of_the_model():
    from torch.func import functional_call, vmap

    from metaedge.sdk.models.conv import supports_task_batching, use_batch_statistics

    model = use_batch_statistics(_conv(out_dim=3))
    assert supports_task_batching(model) and not supports_task_batching(_conv(out_dim=0))  # running stats: no
    torch.manual_seed(1)
    params = {n: p.detach() + 0.1 * torch.randn(4, *p.shape) for n, p in model.named_parameters()}  # per task
    x = torch.randn(4, 6, 1, 16, 16)
    ref = vmap(lambda p, xt: functional_call(model, p, (xt,)))(params, x)
    torch.testing.assert_close(model.forward_tasks(params, x), ref, atol=1e-5, rtol=1e-5)
