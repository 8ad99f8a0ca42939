"""Multi-layer perceptron with a named ``head`` layer, the regression model of the MAML papers."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InputError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    """``in_dim -> hidden... -> out_dim`` with one activation between Linear layers.

    Parameters are named ``body.<i>.weight|bias`` and ``head.weight|bias`` so that adaptation specs
    (``head``, ``biases``, name patterns) can select them.

    Args:
        in_dim: input features.
        out_dim: outputs (regression targets or class logits); ``0`` for an embedding network whose
            output is the last hidden layer (ProtoNets).
        hidden: widths of the hidden layers, e.g. ``(40, 40)`` as in MAML's sinusoid model.
        activation: one of :data:`ACTIVATIONS`.
        skip: add a linear path ``skip(x)`` from input to output (named ``skip.*``, part of the head).
            Calibration curves are mostly linear; the skip carries the linear part so the hidden layers
            only model the family's shared nonlinearity.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: tuple[int, ...] = (40, 40),
        activation: str = "relu",
        skip: bool = False,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_dim) if out_dim > 0 else None
        self.skip = nn.Linear(in_dim, out_dim) if skip and out_dim > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(n, in_dim)`` (extra leading dims are flattened into ``n``) -> ``(n, out_dim)``."""
        x = x.reshape(x.shape[0], -1)
        z = self.body(x)
        if self.head is None:
            return z
        out = self.head(z)
        return out if self.skip is None else out + self.skip(x)
