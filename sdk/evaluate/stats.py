"""Summary statistics with 95% confidence intervals."""

from __future__ import annotations

import numpy as np


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its normal-approximation 95% CI (``1.96 * std / sqrt(n)``)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no values to summarise")
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return float(v.mean()), float(half)
