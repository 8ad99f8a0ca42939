"""Classic per-unit calibration: what a test engineer does without meta-learning.

All fits run in physical units on one task at a time:
- *2-point linear*: the line through the two reference points with the lowest and highest raw
  reading (the textbook zero/span calibration);
- *least-squares polynomial of degree d* in the raw reading (``d <= k - 1``);
- *least-squares multilinear* in every input (needs ``k >= n_inputs + 1``), which can absorb a linear
  temperature cross-sensitivity when temperature is an input.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import Polynomial


def two_point(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, primary: int = 0) -> np.ndarray:
    """2-point linear calibration; ``xs`` ``(k, d)``, ``ys`` ``(k, 1)``, ``xq`` ``(q, d)`` -> ``(q, 1)``."""
    u = xs[:, primary].astype(np.float64)
    lo, hi = int(np.argmin(u)), int(np.argmax(u))
    if u[hi] == u[lo]:
        return np.full((xq.shape[0], 1), ys[:, 0].mean())
    slope = (ys[hi, 0] - ys[lo, 0]) / (u[hi] - u[lo])
    return (ys[lo, 0] + slope * (xq[:, primary] - u[lo]))[:, None]


def polynomial(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, degree: int, primary: int = 0) -> np.ndarray:
    """Least-squares polynomial of ``degree`` in the primary input (domain-scaled for conditioning)."""
    p = Polynomial.fit(xs[:, primary].astype(np.float64), ys[:, 0].astype(np.float64), degree)
    return p(xq[:, primary].astype(np.float64))[:, None]


def multilinear(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Least-squares ``y = a + b . x`` over all inputs."""
    design = np.hstack([np.ones((xs.shape[0], 1)), xs.astype(np.float64)])
    coef, *_ = np.linalg.lstsq(design, ys.astype(np.float64), rcond=None)
    return np.hstack([np.ones((xq.shape[0], 1)), xq.astype(np.float64)]) @ coef


def classic_predictions(
    xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, primary: int = 0, max_degree: int = 5
) -> dict[str, np.ndarray]:
    """Predictions of every classic method that ``k`` support points allow, batched over tasks.

    Args:
        xs: ``(T, k, d)``; ys: ``(T, k, 1)``; xq: ``(T, q, d)`` (physical units).

    Returns:
        ``{method name: (T, q, 1)}``: ``"2-point linear"``, ``"LS polynomial deg d"`` for
        ``1 <= d <= min(k - 1, max_degree)``, and ``"LS multilinear"`` when ``k >= d_in + 1``.
    """
    k, d_in = xs.shape[1], xs.shape[2]
    methods = {"2-point linear": lambda a, b, c: two_point(a, b, c, primary)}
    for deg in range(1, min(k - 1, max_degree) + 1):
        methods[f"LS polynomial deg {deg}"] = lambda a, b, c, deg=deg: polynomial(a, b, c, deg, primary)
    if d_in > 1 and k >= d_in + 1:
        methods["LS multilinear"] = multilinear
    return {name: np.stack([f(a, b, c) for a, b, c in zip(xs, ys, xq)]) for name, f in methods.items()}
