"""Run directories: ``config.json``, ``model.safetensors``, ``optimizer.safetensors``, ``state.json``,
``metrics.jsonl``. Weights are safetensors (no pickle); writes are atomic (temp file + rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import InputError, MissingError
from .learners.base import MetaState
from .optim import FusedAdam


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MissingError(f"{path} does not exist; is this a metaedge run directory?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e}); restore it or start a new run") from e


def flatten(tree: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{"params": {"head.weight": t}}`` -> ``{"params/head.weight": t}`` (contiguous copies)."""
    return {f"{group}/{name}": t.detach().contiguous().cpu() for group, d in tree.items() for name, t in d.items()}


def unflatten(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    tree: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        group, _, name = key.partition("/")
        tree.setdefault(group, {})[name] = t
    return tree


def save_state(path: Path, state: MetaState) -> None:
    """Write a meta-state as safetensors."""
    atomic_write_bytes(path, save(flatten(state)))


def load_state(path: Path) -> MetaState:
    """Read a meta-state written by :func:`save_state` (safetensors: no code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise MissingError(f"{path} does not exist; train a model first (metaedge train)")
    try:
        return unflatten(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise InputError(f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt") from e


def save_optimizer(path: Path, optimizer: FusedAdam | torch.optim.Optimizer) -> None:
    """Optimizer state as safetensors (tensors) plus JSON metadata (hyper-parameters)."""
    sd = optimizer.state_dict()
    tensors = {f"{i}/{k}": torch.as_tensor(v).contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    meta = {"param_groups": json.dumps(sd["param_groups"])}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_optimizer(path: Path, optimizer: FusedAdam | torch.optim.Optimizer) -> None:
    """Restore what :func:`save_optimizer` wrote into ``optimizer``."""
    from safetensors import safe_open

    state: dict[int, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        for key in f.keys():
            i, _, k = key.partition("/")
            state.setdefault(int(i), {})[k] = f.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
