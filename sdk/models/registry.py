"""Build models from the JSON-able ``model`` section of a run config; model kinds by name (``--model``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...errors import InputError
from .conv import conv1d, conv4
from .mlp import MLP

#: ``options(config, input_shape, out_dim) -> factory keyword arguments`` (JSON-able), from a ``TrainConfig``
Options = Callable[[Any, tuple[int, ...], int], dict[str, Any]]


def shape_options(config: Any, input_shape: tuple[int, ...], out_dim: int) -> dict[str, Any]:
    """The default for a registered model: ``factory(input_shape=[...], out_dim=n)``."""
    return {"input_shape": list(input_shape), "out_dim": out_dim}


def mlp_options(config: Any, input_shape: tuple[int, ...], out_dim: int) -> dict[str, Any]:
    """:class:`MLP` arguments: flattened input, the config's hidden widths, activation and skip path."""
    in_dim = 1
    for d in input_shape:
        in_dim *= int(d)
    return {"in_dim": in_dim, "out_dim": out_dim, "hidden": list(config.hidden), "activation": config.activation,
            "skip": config.skip}


def conv_options(config: Any, input_shape: tuple[int, ...], out_dim: int) -> dict[str, Any]:
    """Conv net arguments for ``(C, *spatial)`` inputs: channels, width, input size and normalisation."""
    return {"in_channels": input_shape[0], "out_dim": out_dim, "width": config.width, "input_size": input_shape[1],
            "norm": config.norm}


@dataclass(frozen=True)
class ModelKind:
    """A registered model: how to build it and how a training config describes it."""

    factory: Callable[..., nn.Module]
    options: Options


_MODELS: dict[str, ModelKind] = {}


def register_model(kind: str, factory: Callable[..., nn.Module], options: Options = shape_options) -> None:
    """Make ``{"kind": kind, ...}`` model configs build with ``factory(**rest)`` and ``--model kind`` selectable.

    ``options(config, input_shape, out_dim)`` turns a training config into ``rest`` (stored in ``config.json``);
    the default passes ``input_shape`` and ``out_dim`` only. ``out_dim`` 0 asks for an embedding network.
    """
    _MODELS[kind] = ModelKind(factory, options)


def model_kinds() -> list[str]:
    """Registered model kinds."""
    return sorted(_MODELS)


def model_options(kind: str, config: Any, input_shape: tuple[int, ...], out_dim: int) -> dict[str, Any]:
    """The JSON-able description ``{"kind": kind, **options}`` of a model for ``config``."""
    return {"kind": kind, **_entry(kind).options(config, tuple(input_shape), out_dim)}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from ``{"kind": "mlp", "in_dim": 1, "out_dim": 1, "hidden": [40, 40], ...}``."""
    options = dict(config)
    kind = options.pop("kind", None)
    if "hidden" in options:
        options["hidden"] = tuple(options["hidden"])
    return _entry(kind).factory(**options)


def _entry(kind: Any) -> ModelKind:
    if kind not in _MODELS:
        raise InputError(f"unknown model kind {kind!r}; known kinds: {', '.join(model_kinds())}")
    return _MODELS[kind]


register_model("mlp", MLP, mlp_options)
register_model("conv4", conv4, conv_options)
register_model("conv1d", conv1d, conv_options)
