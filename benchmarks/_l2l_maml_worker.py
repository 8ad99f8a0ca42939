"""Comparator worker for ``benchmarks/meta_train_speed.py``: MAML meta-training with a per-task loop.

Runs in a separate interpreter (the learn2learn venv, or the current one for the plain-PyTorch reference)
and imports only the standard library, ``torch``, ``numpy`` and, for ``impl="l2l"``, ``learn2learn``.

Two implementations of the same meta-step (sinusoid MLP 1-40-40-1, MSE, SGD inner loop, Adam outer step):

* ``l2l``: ``learn2learn.algorithms.MAML`` used as in learn2learn's own examples
  (``learner = maml.clone(); learner.adapt(support_loss); query_loss.backward()`` per task,
  gradients averaged over the meta-batch, then ``opt.step()``);
* ``ref``: the same loop in plain PyTorch, written the way learn2learn works internally (clone the
  parameters, ``torch.autograd.grad(..., create_graph=not first_order)``, ``p - lr * g``).

Protocol (``_protocol.serve``): one JSON command per line on stdin, one reply per line prefixed with ``@@WORKER@@``
(anything else on stdout, e.g. import-time warnings, is ignored by the driver). Commands:

* ``{"cmd": "setup", "impl", "first_order", "inner_steps", "inner_lr", "meta_lr", "threads", "data",
  "weights", "loop"}``: (re)build model, learner and Adam from the ``.npz`` files;
* ``{"cmd": "check", "out": path}``: one meta-iteration on meta-batch 0; writes the meta-gradient
  (``g0..g5``) and the weights after the Adam step (``w0..w5``) to ``out``;
* ``{"cmd": "run", "iters": n}``: ``n`` timed meta-iterations (cycling through the meta-batch pool);
  replies ``{"seconds": ..., "loss": ...}``;
* ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _protocol import serve
from torch import nn


class SineModel(nn.Module):
    """The MAML sinusoid regressor (as in learn2learn's ``examples/maml_sine.py``), 1-h-h-1 ReLU."""

    def __init__(self, dim: int = 40) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(1, dim)
        self.hidden2 = nn.Linear(dim, dim)
        self.hidden3 = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.hidden1(x))
        x = F.relu(self.hidden2(x))
        return self.hidden3(x)


def functional_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``SineModel.forward`` with explicit parameters ``[w1, b1, w2, b2, w3, b3]``."""
    x = F.relu(F.linear(x, params[0], params[1]))
    x = F.relu(F.linear(x, params[2], params[3]))
    return F.linear(x, params[4], params[5])


class Worker:
    """State of one contender: model, optimiser, task pool and the meta-step function."""

    def __init__(self) -> None:
        self.step: Callable[[int], float] | None = None
        self.params: list[torch.Tensor] = []
        self.opt: torch.optim.Optimizer | None = None
        self.pool = 0
        self.it = 0
        self.device = torch.device("cpu")

    # --- setup ----------------------------------------------------------------------------------
    def setup(self, cfg: dict[str, Any]) -> dict[str, Any]:
        torch.set_num_threads(int(cfg["threads"]))
        torch.manual_seed(0)
        self.device = device = torch.device(cfg.get("device", "cpu"))
        data = np.load(cfg["data"])
        xs, ys, xq, yq = (torch.from_numpy(np.ascontiguousarray(data[k])).to(device) for k in ("xs", "ys", "xq", "yq"))
        self.pool = int(xs.shape[0])
        self.it = 0
        weights = np.load(cfg["weights"])
        hidden = int(weights["w0"].shape[0])
        model = SineModel(hidden)
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.copy_(torch.from_numpy(weights[f"w{i}"]))
        model.to(device)
        first_order = bool(cfg["first_order"])
        steps = int(cfg["inner_steps"])
        inner_lr = float(cfg["inner_lr"])
        lossfn = nn.MSELoss(reduction="mean")
        info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}

        if cfg["impl"] == "l2l":
            import learn2learn as l2l

            info["learn2learn"] = l2l.__version__
            maml = l2l.algorithms.MAML(model, lr=inner_lr, first_order=first_order)
            self.params = list(maml.parameters())
            opt = torch.optim.Adam(maml.parameters(), float(cfg["meta_lr"]))
            summed = cfg.get("loop", "per-task") == "summed"

            def step(b: int) -> float:
                # as learn2learn's examples/vision/maml_*.py (per-task backward) or maml_sine.py (summed)
                bx, by, qx, qy = xs[b], ys[b], xq[b], yq[b]
                tasks = bx.shape[0]
                opt.zero_grad()
                meta_train_error = 0.0
                total = 0.0
                for i in range(tasks):
                    learner = maml.clone()
                    for _ in range(steps):
                        learner.adapt(lossfn(learner(bx[i]), by[i]))
                    query_loss = lossfn(learner(qx[i]), qy[i])
                    if summed:
                        total = total + query_loss
                    else:
                        query_loss.backward()
                        meta_train_error += query_loss.item()
                if summed:
                    total = total / tasks
                    total.backward()
                    meta_train_error = total.item() * tasks
                else:
                    for p in maml.parameters():
                        p.grad.data.mul_(1.0 / tasks)
                opt.step()
                return meta_train_error / tasks

        elif cfg["impl"] == "ref":
            params = [p for p in model.parameters()]
            self.params = params
            opt = torch.optim.Adam(params, float(cfg["meta_lr"]))
            create_graph = not first_order

            def step(b: int) -> float:
                bx, by, qx, qy = xs[b], ys[b], xq[b], yq[b]
                tasks = bx.shape[0]
                opt.zero_grad()
                meta_train_error = 0.0
                for i in range(tasks):
                    fast = [p.clone() for p in params]
                    for _ in range(steps):
                        loss = lossfn(functional_forward(fast, bx[i]), by[i])
                        grads = torch.autograd.grad(loss, fast, create_graph=create_graph)
                        fast = [p - inner_lr * g for p, g in zip(fast, grads, strict=True)]
                    query_loss = lossfn(functional_forward(fast, qx[i]), qy[i])
                    query_loss.backward()
                    meta_train_error += query_loss.item()
                for p in params:
                    p.grad.mul_(1.0 / tasks)
                opt.step()
                return meta_train_error / tasks

        else:
            raise ValueError(f"unknown impl {cfg['impl']!r}; use 'l2l' or 'ref'")
        self.opt = opt
        self.step = step
        return info

    # --- commands -------------------------------------------------------------------------------
    def check(self, out: str) -> dict[str, Any]:
        assert self.step is not None
        loss = self.step(0)
        arrays = {f"g{i}": p.grad.detach().cpu().numpy().copy() for i, p in enumerate(self.params)}
        arrays.update({f"w{i}": p.detach().cpu().numpy().copy() for i, p in enumerate(self.params)})
        np.savez(out, **arrays)
        return {"loss": loss}

    def run(self, iters: int) -> dict[str, Any]:
        assert self.step is not None
        loss = float("nan")
        t0 = time.perf_counter()
        for _ in range(iters):
            loss = self.step(self.it % self.pool)
            self.it += 1
        if self.device.type == "cuda":  # every step ends in .item(), but be explicit about the timed work
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "loss": loss}


def main() -> None:
    serve(Worker())


if __name__ == "__main__":
    main()
