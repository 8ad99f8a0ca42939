"""Models used functionally: ``forward(params, x)`` via ``torch.func.functional_call``."""

from .mlp import MLP
from .registry import build_model, model_kinds, register_model

__all__ = ["MLP", "build_model", "model_kinds", "register_model"]
