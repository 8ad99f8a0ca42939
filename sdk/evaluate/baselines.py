"""Baselines run on the very tasks the meta-learned model is scored on.

Regression:
- *scratch*: a freshly initialised network of the run's architecture, trained on the support set
  (SGD at the inner rate for each requested step count, and Adam for ``adam_steps``);
- *transfer*: the same network pretrained on all meta-train tasks pooled, then fine-tuned the same ways;
- *classic calibration* (sensor and table families): 2-point linear and least-squares fits with the
  same points and with ``baseline_shots`` points, the family's physics-based calibrations, and any
  published formula it knows (which needs no reference point at all).

Classification:
- *nearest neighbour* on raw inputs (1-NN, Euclidean);
- *transfer*: the run's backbone pretrained as an ordinary classifier over all meta-train classes,
  then a new linear head fitted per episode on its frozen embeddings (Adam, ``adam_steps``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.func import vmap

from ...atomic import atomic_write_bytes
from ..learners.inner import InnerLoop
from ..learners.losses import get_loss
from ..models import build_model
from ..run import model_config, task_rng, to_tensors
from ..tasks import TaskBatch
from .classic import classic_predictions
from .finetune import adam_finetune, fresh_init, pretrain

if TYPE_CHECKING:
    from ..run import Run
    from .evaluator import EvalSettings

#: (method label, support points used, steps or None, predictions (T, q, out) in physical units / logits)
Prediction = tuple[str, int, "int | None", np.ndarray]


class Context:
    """Baselines for one run: pretrained weights are built once (and cached in the run directory)."""

    def __init__(self, run: Run, settings: EvalSettings) -> None:
        self.run, self.s = run, settings
        self.kind = run.family.task_kind
        # baselines train with plain SGD / Adam whatever the learner's own inner loop is
        if self.kind == "regression":
            self.sgd = InnerLoop(run.learner.model, get_loss("mse"))
            self.transfer = _pretrain_regression(run, settings.pretrain_steps)
            self.scratch = fresh_init(run.learner.model, settings.seed)
        else:
            self.embedder = _pretrain_classifier(run, settings.pretrain_steps)

    def predictions(self, batch: TaskBatch, nb: TaskBatch, shots: int, output: Callable) -> Iterator[Prediction]:
        """Every baseline's predictions for the tasks of ``batch`` (``nb``: its normalised copy)."""
        xs, ys, xq, _ = to_tensors(nb)
        if self.kind == "classification":
            yield "nearest neighbour (raw inputs)", shots, None, _nearest_neighbour(xs, ys, xq).numpy()
            yield from self._new_head(xs, ys, xq, shots)
            return
        xs, ys = xs[:, :shots], ys[:, :shots]
        for name, init in (("transfer", self.transfer), ("scratch", self.scratch)):
            yield from self._finetune(name, init, xs, ys, xq, output)
        fam = self.run.family
        if fam.calibration:
            for k in sorted({shots, *self.s.baseline_shots}):
                sx, sy, qx = batch.x_support[:, :k], batch.y_support[:, :k], batch.x_query
                preds = classic_predictions(sx, sy, qx, fam.primary_input)
                for name, fit in getattr(fam, "physics_baselines", dict)().items():
                    preds[name] = np.stack([fit(a, b, c) for a, b, c in zip(sx, sy, qx)])
                for name, pred in preds.items():
                    yield f"classic {name}", k, None, pred
        for name, formula in getattr(fam, "known_formulas", dict)().items():
            yield f"formula {name}", 0, None, np.stack([formula(x) for x in batch.x_query])

    def _finetune(self, name, init, xs, ys, xq, output) -> Iterator[Prediction]:
        inner, s = self.sgd, self.s
        rates = {k: torch.tensor(self.run.learner.inner_lr) for k in init}
        fwd = vmap(inner.forward, in_dims=(0, None, 0))
        with torch.no_grad():
            traj = vmap(lambda x, y: inner.adapt_trajectory(init, {}, rates, x, y, max(s.steps)))(xs, ys)
            for st in sorted(set(s.steps)):
                yield f"{name} (SGD)", xs.shape[1], st, output(fwd(traj[st], {}, xq))
            tuned = adam_finetune(inner, init, xs, ys, s.adam_steps, s.adam_lr)
            yield f"{name} (Adam)", xs.shape[1], s.adam_steps, output(fwd(tuned, {}, xq))

    def _new_head(self, xs, ys, xq, shots) -> Iterator[Prediction]:
        """Logistic regression on frozen pretrained embeddings, one new head per episode."""
        with torch.no_grad():  # in slices: a chunk of 20-way episodes is tens of thousands of images
            zs, zq = (torch.cat([self.embedder(part) for part in t.flatten(0, 1).split(1024)]) for t in (xs, xq))
        zs, zq = zs.view(*xs.shape[:2], -1), zq.view(*xq.shape[:2], -1)
        ways = int(ys.max()) + 1
        head = nn.Linear(zs.shape[-1], ways)
        inner = InnerLoop(head, get_loss("cross_entropy"))
        init = {k: torch.zeros_like(v) for k, v in head.named_parameters()}
        tuned = adam_finetune(inner, init, zs, ys, self.s.adam_steps, self.s.adam_lr)
        with torch.no_grad():
            logits = vmap(inner.forward, in_dims=(0, None, 0))(tuned, {}, zq)
        yield "transfer (pretrained, new head)", shots, self.s.adam_steps, logits.numpy()


def _nearest_neighbour(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Logits ``(T, q, ways)``: minus the distance from each query to the nearest support sample of each class."""
    d = torch.cdist(xq.flatten(2), xs.flatten(2))  # (T, q, k*ways)
    ways = int(ys.max()) + 1
    masked = torch.where(torch.nn.functional.one_hot(ys, ways).bool()[:, None, :, :], d[..., None], torch.inf)
    return -masked.min(2).values


def _pretrain_regression(run: Run, steps: int):
    """The run's network trained on pooled meta-train tasks (cached in ``transfer.safetensors``)."""
    cfg, fam, norm = run.config, run.family, run.normalizer

    def sample(step: int):
        b = norm.batch(fam.sample_batch(task_rng(cfg.seed + 7919, step), cfg.meta_batch, cfg.shots, cfg.queries))
        xs, ys, xq, yq = to_tensors(b)
        return torch.cat([xs, xq], 1).flatten(0, 1), torch.cat([ys, yq], 1).flatten(0, 1)

    init = fresh_init(run.learner.model, cfg.seed + 1)
    sgd = InnerLoop(run.learner.model, get_loss("mse"))
    return pretrain(sgd, init, sample, steps, cache=run.path / "transfer.safetensors")


def _pretrain_classifier(run: Run, steps: int, batch_size: int = 64) -> Callable[[torch.Tensor], torch.Tensor]:
    """Backbone trained as a plain classifier over every meta-train class; returns its embedding function."""
    cfg, fam = run.config, run.family
    x, y = fam.arrays("train")
    classes, labels = np.unique(y, return_inverse=True)
    mcfg = {**model_config(cfg, fam), "out_dim": len(classes)}
    if mcfg["kind"] == "mlp":
        mcfg["skip"] = False
    torch.manual_seed(cfg.seed + 2)
    model = build_model(mcfg)
    cache = run.path / "transfer_classifier.safetensors"
    cached = load_file(str(cache)) if cache.is_file() else {}
    if int(cached.pop("__steps__", torch.tensor([-1])).item()) == steps:
        model.load_state_dict(cached)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        rng = np.random.default_rng(cfg.seed + 3)
        model.train()
        for _ in range(steps):
            idx = rng.integers(0, len(x), batch_size)
            loss = nn.functional.cross_entropy(model(torch.as_tensor(x[idx])), torch.as_tensor(labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        atomic_write_bytes(cache, save({**{k: v.contiguous() for k, v in model.state_dict().items()},
                                        "__steps__": torch.tensor([steps])}))
    model.eval()
    body = model.body

    def embed(inputs: torch.Tensor) -> torch.Tensor:
        flat = inputs.reshape(len(inputs), -1) if mcfg["kind"] == "mlp" else inputs
        return body(flat).flatten(1)

    return embed
