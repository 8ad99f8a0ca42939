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


@pytest.mark.parametrize("algo,adapt", [("maml", None), ("metasgd", None), ("anil", None), ("maml", "biases")])
def test_forward_and_adapt_steps_match_torch(tmp_path, algo, adapt):
    torch.manual_seed(0)
    learner = make_learner(algo, MLP(2, 1, (16, 16), activation="tanh"), inner_lr=0.05, adapt=adapt)
    state = learner.init_state()
    paths = export_graphs(learner, state, tmp_path, torch.randn(5, 2), torch.randn(5, 1))
    ops = {n.op_type for n in onnx.load(str(paths["adapt_step"])).graph.node}
    assert ops <= {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Tanh", "Pow", "ReduceMean", "ReduceSum", "Reshape",
                   "Transpose", "Expand", "Shape", "Concat", "Cast", "Squeeze", "Unsqueeze", "Where", "Constant",
                   "Relu", "LessOrEqual", "Neg", "Slice", "Gather", "Identity"}, ops
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
            out = step.run(None, feeds)
            theta = dict(zip(names, out[:-1]))
            ref, loss = learner.inner.step(ref, frozen, state["rates"], xs, ys)
            assert out[-1] == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
        for n in names:
            np.testing.assert_allclose(theta[n], ref[n].detach().numpy(), rtol=1e-5, atol=1e-6)
        x = torch.randn(7, 2)
        y = forward.run(None, {"x": x.numpy(), **{f"theta.{n}": theta[n] for n in names}})[0]
        np.testing.assert_allclose(y, learner.inner.forward(ref, frozen, x).detach().numpy(), rtol=1e-5, atol=1e-6)
