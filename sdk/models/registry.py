"""Build models from the JSON-able ``model`` section of a run config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .conv import conv1d, conv4
from .mlp import MLP

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(kind: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``{"kind": kind, ...}`` model configs build with ``factory(**rest)``."""
    _MODELS[kind] = factory


def model_kinds() -> list[str]:
    """Registered model kinds."""
    return sorted(_MODELS)


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from ``{"kind": "mlp", "in_dim": 1, "out_dim": 1, "hidden": [40, 40], ...}``."""
    options = dict(config)
    kind = options.pop("kind", None)
    if kind not in _MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(model_kinds())}")
    if "hidden" in options:
        options["hidden"] = tuple(options["hidden"])
    return _MODELS[kind](**options)


register_model("mlp", MLP)
register_model("conv4", conv4)
register_model("conv1d", conv1d)
