"""A run directory and what the trainer, the evaluator and the exporter share about it.

``config.json`` records how a run was built: the training config, the family's interface, the model
description, the loss, the adapted parameters and the normalisation. :class:`RunRecord` is that file as a typed
contract; :meth:`Run.load` rebuilds the run from what it records (the model from its description, the learner with
its loss) and checks the rest against the rebuilt learner, instead of re-deriving any of it from today's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingError
from . import checkpoint as ckpt
from .config import TrainConfig
from .learners import Learner, MetaState, learner_class, loss_for, make_learner
from .models import build_model, model_options
from .normalize import Normalizer
from .tasks import TaskBatch, TaskFamily, make_family


def task_rng(seed: int, iteration: int) -> np.random.Generator:
    """The generator for the meta-batch of ``iteration``: independent of how the run was split."""
    return np.random.default_rng([seed, iteration])


def to_tensors(batch: TaskBatch, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
    """``(xs, ys, xq, yq)`` tensors of a task batch: support ``(T, k, ...)`` and query ``(T, q, ...)`` sets."""
    arrays = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
    return tuple(torch.as_tensor(a, device=device) for a in arrays)


def sample_options(config: TrainConfig, family: TaskFamily) -> dict[str, Any]:
    """Extra ``sample_batch`` options: the number of ways for classification families."""
    return {"ways": config.ways} if family.task_kind == "classification" and config.ways else {}


def model_kind(config: TrainConfig, family: TaskFamily) -> str:
    """The model kind ``auto`` resolves to for the family's input shape (else the configured kind)."""
    if config.model != "auto":
        return config.model
    return {1: "mlp", 2: "conv1d", 3: "conv4"}.get(len(family.input_shape), "mlp")


def model_config(config: TrainConfig, family: TaskFamily) -> dict[str, Any]:
    """JSON-able model description (stored in ``config.json``, rebuilt by ``build_model``).

    A learner without head (:attr:`Learner.has_head` False, e.g. ProtoNets) gets an embedding network
    (``out_dim`` 0); classifiers get one output per way.
    """
    if not learner_class(config.algo).has_head:
        out_dim = 0
    elif family.task_kind == "classification":
        out_dim = config.ways or family.output_dim
    else:
        out_dim = family.output_dim
    return model_options(model_kind(config, family), config, family.input_shape, out_dim)


def build_learner(config: TrainConfig, family: TaskFamily, model: dict[str, Any] | None = None,
                  loss: str | None = None) -> Learner:
    """The learner for ``config``: over ``model`` (a description; default: :func:`model_config`) with ``loss``
    (default: the family's task kind's loss)."""
    return make_learner(config.algo, build_model(model or model_config(config, family)),
                        loss=loss or loss_for(family.task_kind), inner_lr=config.inner_lr,
                        inner_steps=config.inner_steps, adapt=config.adapt)


@dataclass(frozen=True)
class RunRecord:
    """``config.json`` of a run directory (written by the trainer before the first iteration)."""

    train: TrainConfig
    family: dict[str, Any]
    model: dict[str, Any]
    loss: str
    adapted: tuple[str, ...]
    normalization: dict[str, Any]
    world_size: int = 1

    @classmethod
    def parse(cls, data: Any, where: str | Path = "config.json") -> RunRecord:
        """Check and type a loaded ``config.json``; one sentence names a missing or wrong entry."""
        if not isinstance(data, dict):
            raise InputError(f"{where} must hold a JSON object; restore it or start a new run")
        kinds = {"train": dict, "family": dict, "model": dict, "loss": str, "adapted": list, "normalization": dict}
        for key, kind in kinds.items():
            if not isinstance(data.get(key), kind):
                problem = "lacks" if key not in data else "has a wrong"
                raise InputError(f"{where} {problem} entry {key!r} (expected a JSON {kind.__name__}); it was not "
                                 "written by `metaedge train`: restore it or start a new run")
        return cls(train=TrainConfig.from_dict(data["train"]), family=data["family"], model=data["model"],
                   loss=data["loss"], adapted=tuple(data["adapted"]), normalization=data["normalization"],
                   world_size=int(data.get("world_size", 1)))

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train.to_dict(), "family": self.family, "model": self.model, "loss": self.loss,
                "adapted": list(self.adapted), "normalization": self.normalization, "world_size": self.world_size}


@dataclass
class Run:
    """A loaded run directory: config, family, learner, normaliser and meta-state."""

    path: Path
    config: TrainConfig
    family: TaskFamily
    learner: Learner
    normalizer: Normalizer
    state: MetaState

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Run:
        """Read a run directory written by :func:`metaedge.sdk.train.train` (weights from ``model.safetensors``)."""
        path = Path(path)
        if not path.is_dir():
            raise MissingError(f"run directory {path} does not exist; train one with `metaedge train`")
        record = RunRecord.parse(ckpt.read_json(path / "config.json"), path / "config.json")
        config = record.train
        family = make_family(config.family, **config.family_options)
        learner = build_learner(config, family, model=record.model, loss=record.loss)
        if tuple(learner.adapted) != record.adapted:
            raise InputError(f"{path / 'config.json'} records adapted parameters {list(record.adapted)[:5]} but its "
                             f"model and spec {learner.adapt_spec!r} select {learner.adapted[:5]}; the file was "
                             "edited or written by another version: retrain the run")
        state = learner.canonical(ckpt.load_state(path / "model.safetensors"))
        state = {g: {k: v.to(device) for k, v in d.items()} for g, d in state.items()}
        return cls(path, config, family, learner, Normalizer(**record.normalization), state)

    def with_adaptation(self, spec: str) -> Run:
        """This run with another adaptation spec (e.g. to ship ``head`` adaptation of a run trained with ``all``).

        Parameters adapted in training keep their (possibly meta-learned) rates; newly adapted ones start at the
        learner's initial rate, which is what ``inner_lr`` meant in training.
        """
        if not self.learner.has_inner_loop:
            raise InputError(f"the {self.learner.name} learner adapts no parameters (its device solver is "
                             f"{self.learner.device_solver.kind}); drop the adaptation spec")
        config = replace(self.config, adapt=spec)
        learner = make_learner(config.algo, self.learner.model, loss=self.learner.loss_name,
                               inner_lr=config.inner_lr, inner_steps=config.inner_steps, adapt=spec)
        initial = learner.init_state()["rates"]
        rates = {n: self.state["rates"].get(n, initial[n]) for n in learner.adapted}
        return replace(self, config=config, learner=learner, state={**self.state, "rates": rates})
