"""Models used functionally: ``forward(params, x)`` via ``torch.func.functional_call``."""

from .mlp import ACTIVATIONS, MLP
from .registry import build_model, model_kinds, model_options, register_model

__all__ = ["ACTIVATIONS", "MLP", "build_model", "model_kinds", "model_options", "register_model"]
