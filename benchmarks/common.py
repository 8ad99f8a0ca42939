"""Helpers shared by the benchmark scripts: train-or-resume a run, timing, and writing results."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.train import train

RESULTS = Path(__file__).resolve().parent / "results"


def train_or_resume(config: TrainConfig, out: Path, progress: bool = True) -> tuple[Path, float]:
    """Train ``config`` into ``out`` (resuming a partial run); returns the path and the wall seconds spent
    in training, accumulated over resumes (kept in ``out/wall_seconds.json``)."""
    wall_file = out / "wall_seconds.json"
    spent = json.loads(wall_file.read_text())["seconds"] if wall_file.is_file() else 0.0
    state = out / "state.json"
    done = state.is_file() and json.loads(state.read_text())["iteration"] >= config.iterations
    if not done:
        t0 = time.perf_counter()
        train(config, out, resume=(out / "state.json").is_file(), progress=progress)
        spent += time.perf_counter() - t0
        wall_file.write_text(json.dumps({"seconds": spent}))
    return out, spent


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**data, "machine": machine()}, indent=2) + "\n")
    return path
