"""The training configuration: everything that defines a meta-training run (``config.json``'s ``train`` part)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import InputError


def refuse_unknown_keys(cls: type, data: dict[str, Any], what: str) -> None:
    """:class:`InputError` naming the keys of ``data`` that are not fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown {what} option(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")


@dataclass
class TrainConfig:
    """Everything that defines a meta-training run; ``config.json`` of a run directory holds it."""

    family: str = "sinusoid"
    family_options: dict[str, Any] = field(default_factory=dict)
    #: a registered learner (``metaedge.sdk.learners.ALGORITHMS``)
    algo: str = "maml"
    shots: int = 10
    queries: int = 10
    inner_steps: int = 1
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    #: "constant" (the MAML papers) or "cosine" (decay to 1% of meta_lr: reaches the precision calibration needs)
    lr_schedule: str = "constant"
    meta_batch: int = 25
    iterations: int = 1000
    #: classification: classes per episode (default: the family's)
    ways: int | None = None
    #: "auto" (mlp for feature vectors, conv4 for images, conv1d for time series) or a registered kind (mlp, conv4,
    #: conv1d, or your own: ``metaedge.sdk.models.register_model``)
    model: str = "auto"
    #: conv nets: channels per block and normalisation ("batch", "group", "none")
    width: int = 64
    norm: str = "batch"
    hidden: list[int] = field(default_factory=lambda: [40, 40])
    activation: str = "relu"
    #: linear input->output path beside the hidden layers (helps near-linear calibration curves)
    skip: bool = False
    adapt: str | None = None
    seed: int = 0
    device: str = "cpu"
    #: intra-op CPU threads; 1 is fastest for small models and avoids oversubscription under torchrun
    threads: int = 1
    #: how the meta-gradient is computed: None (default) takes the fastest correct path, the hand-derived batched
    #: passes of ``learners.mlp_fast`` where they serve the learner and model, else eager autograd; False forces
    #: eager autograd (``vmap``); True torch.compiles the autograd path (15-40 s compile, eager if it fails)
    compile: bool | None = None
    log_every: int = 100
    checkpoint_every: int = 1000
    #: a run directory whose meta-parameters (weights and learned rates) and normaliser this run starts from,
    #: e.g. the champion of a model update; its architecture (algo, model, adaptation) must be this run's
    init_from: str | None = None
    #: dynamics runs: the model-predictive controller the bundle states, in the keys of the manifest's ``control``
    #: part (docs/control.md); given keys override the family's ``control_defaults``
    control: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, refusing unknown keys with their names."""
        refuse_unknown_keys(cls, data, "training")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`InputError` with one sentence for out-of-range values."""
        positive = ("shots", "queries", "inner_steps", "meta_batch", "iterations", "log_every", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise InputError(f"init_from must be the path of a run directory, got {self.init_from!r}")
        if self.compile is not None and not isinstance(self.compile, bool):
            raise InputError(f"compile must be true, false or absent (the default path), got {self.compile!r}")
        if self.control is not None and not isinstance(self.control, dict):
            raise InputError(f"control must be an object of controller settings, got {self.control!r}")
        for name in ("inner_lr", "meta_lr"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive finite number, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
