"""Latency and memory of a bundle on this machine: adapt and predict percentiles, peak resident memory."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np

from .model import Model


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def bench(model: Model, shots: int = 10, steps: int | None = None, predict_n: int = 100, repeats: int = 200,
          seed: int = 0) -> dict[str, Any]:
    """Time ``repeats`` adaptations on ``shots`` random standard-normal-scaled samples and predictions of
    ``predict_n`` inputs; returns percentiles in milliseconds."""
    m = model.bundle.manifest
    rng = np.random.default_rng(seed)
    norm = m.normalization
    shape = m.input.shape

    def inputs(n: int) -> np.ndarray:
        z = rng.standard_normal((n, *shape)).astype(np.float32)
        return z * np.asarray(norm.x_std, np.float32) + np.asarray(norm.x_mean, np.float32) if len(shape) == 1 \
            else z

    xs, xq = inputs(shots), inputs(predict_n)
    ys = rng.standard_normal((shots, m.output.dim)).astype(np.float32)
    adapt_ms, predict_ms = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        adapted = model.adapt(xs, ys, steps=steps)
        t1 = time.perf_counter()
        adapted.predict(xq)
        t2 = time.perf_counter()
        adapt_ms.append((t1 - t0) * 1e3)
        predict_ms.append((t2 - t1) * 1e3)

    def pct(v: list[float]) -> dict[str, float]:
        return {f"p{q}": float(np.percentile(v, q)) for q in (50, 90, 99)}

    return {"shots": shots, "steps": adapted.steps_run, "predict_n": predict_n, "repeats": repeats,
            "adapt_ms": pct(adapt_ms), "predict_ms": pct(predict_ms), "peak_rss_mib": peak_rss_mib()}
