"""Comparator worker for ``benchmarks/classification_speed.py``: few-shot classification training the
learn2learn way, in the learn2learn venv.

Imports only the standard library, ``torch``, ``numpy``, ``learn2learn`` and, for the command loop and the
``check``/``run`` commands, the sibling worker ``_l2l_maml_worker.py`` (command loop: ``_protocol.serve``).
The model is learn2learn's own Conv4 (``l2l.vision.models.CNN4`` / ``CNN4Backbone``: conv 3x3, batch
norm, ReLU, max-pool 2, four blocks, 64 channels; 1x28x28 inputs give a 64-d embedding). ``learn2learn.vision``
needs torchvision, which the learn2learn venv lacks (``l2l.vision`` is then ``None``), so its
``vision/models/cnn4.py`` is loaded by file path (it needs only torch, scipy and learn2learn).

Two meta-steps (``setup`` field ``algo``):

* ``protonet``: Prototypical Networks written as learn2learn's ``examples/vision/protonet_*.py`` and
  easyfsl do it (learn2learn has no ProtoNet class): one forward of support + query through the
  backbone in training mode, prototypes = class means of the support embeddings (the support arrives
  sorted by class, so a reshape + mean, as the example does after sorting), logits = negative squared
  Euclidean distances, cross-entropy on the query, ``backward()``, ``Adam.step()``;
* ``maml`` / ``fomaml``: ``l2l.algorithms.MAML(model, lr, first_order)`` with the per-task loop of
  ``examples/vision/maml_omniglot.py`` (``clone()``, ``adapt()`` per inner step, query
  ``loss.backward()`` per task, gradients divided by the meta-batch, ``Adam.step()``); batch norm in
  training mode, i.e. per-task batch statistics.

``setup`` fields: ``algo``, ``inner_steps``, ``inner_lr``, ``meta_lr``, ``threads``, ``data`` (``.npz``
with ``xs, ys, xq, yq`` of shape ``(pool, T, n, ...)``), ``weights`` (``.npz`` with ``w0..``), ``names``
(the learn2learn parameter name of each ``w{i}``; the meta-gradient is reported in that order).
``check`` also writes the loss of the step (``loss``) to its ``.npz``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _l2l_maml_worker import Worker as _LineWorker
from _protocol import serve
from torch import nn


def l2l_cnn4() -> ModuleType:
    """learn2learn's ``vision/models/cnn4.py`` (``CNN4``, ``CNN4Backbone``), without ``learn2learn.vision``."""
    import learn2learn as l2l

    path = Path(l2l.__file__).parent / "vision" / "models" / "cnn4.py"
    spec = importlib.util.spec_from_file_location("l2l_vision_models_cnn4", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sq_euclidean_logits(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """``-||q - p||^2`` for every query/prototype pair, ``(n, ways)`` (as the learn2learn example)."""
    n, m = query.shape[0], protos.shape[0]
    return -((query.unsqueeze(1).expand(n, m, -1) - protos.unsqueeze(0).expand(n, m, -1)) ** 2).sum(dim=2)


class Worker(_LineWorker):
    """The sinusoid worker's ``check``/``run`` with classification ``setup``."""

    def setup(self, cfg: dict[str, Any]) -> dict[str, Any]:
        import learn2learn as l2l

        torch.set_num_threads(int(cfg["threads"]))
        torch.manual_seed(0)
        data = np.load(cfg["data"])
        xs, ys, xq, yq = (torch.from_numpy(np.ascontiguousarray(data[k])) for k in ("xs", "ys", "xq", "yq"))
        self.pool, self.it = int(xs.shape[0]), 0
        dtype = getattr(torch, cfg.get("dtype", "float32"))
        xs, xq = xs.to(dtype), xq.to(dtype)
        algo = cfg["algo"]
        cnn4 = l2l_cnn4()
        if algo == "protonet":
            model: nn.Module = cnn4.CNN4Backbone(hidden_size=64, layers=4, channels=1, max_pool=True)
        else:
            ways = int(ys.max()) + 1
            model = cnn4.CNN4(ways, hidden_size=64, layers=4, channels=1, max_pool=True, embedding_size=64)
        named = dict(model.named_parameters())
        names = list(cfg["names"])
        if sorted(names) != sorted(named):
            raise ValueError(f"parameter names {names} do not match the model's {list(named)}")
        weights = np.load(cfg["weights"])
        with torch.no_grad():
            for i, n in enumerate(names):
                w = torch.from_numpy(weights[f"w{i}"])
                if w.shape != named[n].shape:
                    raise ValueError(f"{n}: shape {tuple(w.shape)} != {tuple(named[n].shape)}")
                named[n].copy_(w)
        self.params = [named[n] for n in names]
        model.to(dtype).train()
        opt = torch.optim.Adam(model.parameters(), float(cfg["meta_lr"]))
        info: dict[str, Any] = {"torch": torch.__version__, "learn2learn": l2l.__version__,
                                "threads": torch.get_num_threads(), "model": f"{cnn4.__file__}:{type(model).__name__}"}

        if algo == "protonet":

            def step(b: int) -> float:
                support, labels, query, targets = xs[b, 0], ys[b, 0], xq[b, 0], yq[b, 0]
                ways = int(labels.max()) + 1
                opt.zero_grad()
                z = model(torch.cat([support, query]))
                protos = z[: len(support)].reshape(ways, len(support) // ways, -1).mean(dim=1)
                loss = F.cross_entropy(sq_euclidean_logits(z[len(support) :], protos), targets)
                loss.backward()
                opt.step()
                return loss.item()

        else:
            maml = l2l.algorithms.MAML(model, lr=float(cfg["inner_lr"]), first_order=algo == "fomaml")
            lossfn = nn.CrossEntropyLoss(reduction="mean")
            steps = int(cfg["inner_steps"])

            def step(b: int) -> float:
                bx, by, qx, qy = xs[b], ys[b], xq[b], yq[b]
                tasks = bx.shape[0]
                opt.zero_grad()
                meta_train_error = 0.0
                for i in range(tasks):
                    learner = maml.clone()
                    for _ in range(steps):
                        learner.adapt(lossfn(learner(bx[i]), by[i]))
                    evaluation_error = lossfn(learner(qx[i]), qy[i])
                    evaluation_error.backward()
                    meta_train_error += evaluation_error.item()
                for p in maml.parameters():
                    p.grad.data.mul_(1.0 / tasks)
                opt.step()
                return meta_train_error / tasks

        self.opt, self.step = opt, step
        return info

    def check(self, out: str) -> dict[str, Any]:
        reply = super().check(out)
        with np.load(out) as saved:
            arrays = {k: saved[k] for k in saved.files}
        np.savez(out, **arrays, loss=np.float64(reply["loss"]))
        return reply


def main() -> None:
    serve(Worker())


if __name__ == "__main__":
    main()
