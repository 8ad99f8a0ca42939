"""ONNX graphs traced from the learner's inner loop: parity with PyTorch, dynamic support size, plain ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from metaedge.export.graphs import export_graphs
from metaedge.sdk.learners import make_learner
from metaedge.sdk.models import MLP
from metaedge.sdk.tasks import EpisodicFamily, register_family


class Squares(EpisodicFamily):
    """Six classes of 16x16 noise images, each with a bright square at its own place."""

    name = "test-squares"

    def __init__(self, ways: int = 3):
        rng = np.random.default_rng(0)
        y = np.repeat(np.arange(6), 8)
        x = rng.normal(size=(48, 1, 16, 16)).astype(np.float32) * 0.3
        for c in range(6):
            x[y == c, 0, 2 * c: 2 * c + 3, 2 * c: 2 * c + 3] += 2.0
        super().__init__({"train": (x, y), "test": (x, y)}, ways=ways)


register_family("test-squares", Squares)


def _taken(session, feeds):
    """The feeds a session takes (step sizes exported as constants are no inputs)."""
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in feeds.items() if k in names}


@pytest.mark.parametrize("algo,adapt", [("maml", None), ("metasgd", None), ("anil", None), ("maml", "biases")])
def test_forward_and_adapt_steps_match_torch(tmp_path, algo, adapt):
    torch.manual_seed(0)
    learner = make_learner(algo, MLP(2, 1, (16, 16), activation="tanh"), inner_lr=0.05, adapt=adapt)
    state = learner.init_state()
    if algo == "metasgd":  # learned per-element rates: graph inputs (one value throughout: graph constants)
        state["rates"] = {n: r * (1 + torch.rand_like(r)) for n, r in state["rates"].items()}
    paths = export_graphs(learner, state, tmp_path, torch.randn(5, 2), torch.randn(5, 1))
    graph = onnx.load(str(paths["adapt_step"])).graph
    assert any(i.name.startswith("rate.") for i in graph.input) == (algo == "metasgd")
    ops = {n.op_type for n in graph.node}
    assert ops <= {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Tanh", "Pow", "ReduceMean", "ReduceSum", "Reshape",
                   "Transpose", "Expand", "Shape", "Concat", "Cast", "Squeeze", "Unsqueeze", "Where", "Constant",
                   "Relu", "LessOrEqual", "Neg", "Slice", "Gather", "Identity", "ConstantOfShape"}, ops
    step = ort.InferenceSession(str(paths["adapt_step"]))
    forward = ort.InferenceSession(str(paths["forward"]))
    fast, frozen = learner.split(state["params"])
    names = list(fast)
    for k in (3, 10):  # dynamic support size
        xs, ys = torch.randn(k, 2), torch.randn(k, 1)
        theta = {n: v.numpy() for n, v in fast.items()}
        ref = dict(fast)
        for _ in range(5):
            feeds = {"xs": xs.numpy(), "ys": ys.numpy(), **{f"theta.{n}": theta[n] for n in names},
                     **{f"rate.{n}": state["rates"][n].numpy() for n in names}}
            out = step.run(None, _taken(step, feeds))
            theta = dict(zip(names, out[:-1]))
            ref, loss = learner.inner.step(ref, frozen, state["rates"], xs, ys)
            assert out[-1] == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
        for n in names:
            np.testing.assert_allclose(theta[n], ref[n].detach().numpy(), rtol=1e-5, atol=1e-6)
        x = torch.randn(7, 2)
        y = forward.run(None, {"x": x.numpy(), **{f"theta.{n}": theta[n] for n in names}})[0]
        np.testing.assert_allclose(y, learner.inner.forward(ref, frozen, x).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_conv4_full_network_adapt_step_exports_with_plain_ops(tmp_path, norm):
    """Conv4 adaptation of every layer: convolution_backward is decomposed into Conv / ConvTranspose."""
    from metaedge.sdk.models import build_model

    torch.manual_seed(0)
    model = build_model({"kind": "conv4", "in_channels": 1, "out_dim": 3, "width": 4, "input_size": 16,
                         "norm": norm})
    learner = make_learner("maml", model, loss="cross_entropy", inner_lr=0.4)
    state = learner.init_state()
    xs, ys = torch.randn(6, 1, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2])
    paths = export_graphs(learner, state, tmp_path, xs, ys)
    ops = {n.op_type for n in onnx.load(str(paths["adapt_step"])).graph.node}
    assert "Conv" in ops and "ConvTranspose" in ops and not any(op.startswith("ATen") for op in ops)
    fast, frozen = learner.split(state["params"])
    names = list(fast)
    step = ort.InferenceSession(str(paths["adapt_step"]))
    out = step.run(None, _taken(step, {
        "xs": xs.numpy(), "ys": ys.numpy(), **{f"theta.{n}": fast[n].numpy() for n in names},
        **{f"rate.{n}": state["rates"][n].numpy() for n in names}}))
    ref, loss = learner.inner.step(fast, frozen, state["rates"], xs, ys)
    assert out[-1] == pytest.approx(loss.item(), rel=1e-5)
    for o, n in zip(out, names):
        np.testing.assert_allclose(o, ref[n].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_classification_bundle_runs_on_the_runtime(tmp_path):
    from metaedge.export.bundle import export_bundle
    from metaedge.runtime.model import Model
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    run = train(TrainConfig(family="test-squares", algo="fomaml", ways=3, shots=2, queries=2, meta_batch=2,
                            iterations=3, width=4, inner_lr=0.2, inner_steps=2), tmp_path / "run", progress=False)
    bundle = export_bundle(run, tmp_path / "b.meb", check=False)  # Conv4 parity: the graph test above
    model = Model.load(bundle)
    task = Squares().sample_task(np.random.default_rng(1), 2, 3)
    adapted = model.adapt(task.x_support, task.y_support, steps=2)
    labels, proba = adapted.predict(task.x_query), adapted.probabilities(task.x_query)
    assert proba.shape == (9, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (labels == proba.argmax(1)).all()
    onnx_model = Model.load(bundle, backend="onnxruntime")  # the fused graph of a classification bundle: labels
    default = onnx_model.bundle.manifest.adaptation.inner_steps
    fused, fused_labels = onnx_model.adapt_predict(task.x_support, task.y_support, task.x_query)
    two = onnx_model.adapt(task.x_support, task.y_support, steps=default)
    assert fused.steps_kept == two.steps_kept and (fused_labels == two.predict(task.x_query)).all()
    np.testing.assert_allclose(fused.theta, two.theta, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="integers in 0..2"):
        model.adapt(task.x_support, np.full(len(task.x_support), 7))


def test_protonet_bundle_builds_prototypes_on_the_device(tmp_path):
    from metaedge.export.bundle import export_bundle
    from metaedge.runtime.model import Adapted, Model
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.tasks import make_family
    from metaedge.sdk.train import train

    run = train(TrainConfig(family="test-squares", algo="protonet", shots=2, queries=2, meta_batch=1, iterations=4,
                            width=4), tmp_path / "run", progress=False)
    bundle = export_bundle(run, tmp_path / "p.meb")
    manifest = __import__("json").loads((bundle / "manifest.json").read_text())
    assert manifest["adaptation"]["prototypes"] and manifest["parity_max_relative_difference"] <= 1e-5
    model = Model.load(bundle)
    task = make_family("test-squares").sample_task(np.random.default_rng(3), 2, 3, ways=4)  # any number of ways
    adapted = model.adapt(task.x_support, task.y_support)
    proba = adapted.probabilities(task.x_query)
    assert proba.shape == (12, 4) and (adapted.predict(task.x_query) == proba.argmax(1)).all()
    adapted.save(tmp_path / "s.npz")
    assert (Adapted.load(model, tmp_path / "s.npz").predict(task.x_query) == adapted.predict(task.x_query)).all()
    _, labels = model.adapt_predict(task.x_support, task.y_support, task.x_query)  # prototypes: adapt + outputs
    assert (labels == adapted.predict(task.x_query)).all()
    with pytest.raises(ValueError, match="no sample of class"):
        model.adapt(task.x_support[:2], np.array([0, 2]))


def test_traced_support_size_differs_from_every_other_dimension():
    """A support as large as a layer is wide would share its symbol when traced and freeze the sample axis."""
    import torch

    from metaedge.export.graphs import _distinct_rows

    xs, ys, w = torch.arange(16.0).reshape(16, 1), torch.zeros(16, 2), torch.zeros(2, 16)
    rx, ry, rw = _distinct_rows((xs, ys, w), ((0, 1),))
    assert rx.shape[0] == ry.shape[0] == 17 and rw is w
    assert torch.equal(rx[:16], xs) and rx[16, 0] == 0  # rows repeat cyclically
    same = (torch.zeros(5, 3), torch.zeros(5, 1), torch.zeros(2, 16))
    assert _distinct_rows(same, ((0, 1),)) is same
