"""Predictive intervals and guided reference points, numpy only (a device runs this).

Everything here is in the bundle's standardised units (``(y - y_mean) / y_std``, adapted parameters as stored);
:class:`~metaedge.runtime.model.Adapted` converts to physical units.

Ridge bundles (``gauss-newton`` solver, method ``gaussian-posterior``) are Bayesian linear regression on the
meta-learned features: prior ``theta ~ N(theta0, sigma^2 Lambda^-1)`` with ``Lambda = diag(exp(rates) +
min_damping)``, likelihood ``y ~ N(J theta, sigma^2 I)`` with ``J`` the Jacobian of the outputs with respect to
the adapted parameters (the features, for a linear head). The damped Gauss-Newton step is the posterior mean, the
posterior covariance is ``sigma^2 (J^T J + Lambda)^-1``, and the predictive variance at ``x`` (Jacobian row
``j(x)``) is::

    var(x) = sigma^2 * (1 + j(x)^T (J^T J + Lambda)^-1 j(x))

``sigma`` (per output) and a calibration factor per level are meta-fitted at export (``export/uncertainty.py``).

Gradient learners (method ``scaled-conformal``): the spread of a task is ``sqrt(support_mse + tau^2)`` (its
support residual after adaptation, floored by the fitted ``tau``) and the multiplier is the split-conformal
quantile of ``|y - f| / spread`` over meta-validation tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .manifest import Uncertainty


@dataclass(frozen=True)
class Interval:
    """A prediction with its interval, physical units: ``prediction``, ``lower``, ``upper`` ``(n, out)``."""

    prediction: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float

    @property
    def half_width(self) -> np.ndarray:
        """``(upper - lower) / 2`` ``(n, out)``."""
        return (self.upper - self.lower) / 2


@dataclass(frozen=True)
class Suggestion:
    """The next reference point to set: ``index`` into the candidates ``(m, d)``, the ``point`` ``(d,)`` itself,
    and the ``scores`` ``(m,)`` it was chosen by (ridge: the reduction of the integrated posterior predictive
    variance over the candidates that a reading there alone brings, physical units squared; gradient learners:
    the standardised distance to the nearest support point). ``plan`` ``(b,)``: with a budget, the indices of every
    point still to take in the planned design (``index`` first); without one, ``(index,)``."""

    index: int
    point: np.ndarray
    scores: np.ndarray
    method: str
    plan: tuple[int, ...] = ()


def multiplier(uncertainty: Uncertainty, level: float) -> float:
    """The fitted half-width multiplier at ``level`` (linear between fitted levels); :class:`InputError` for a level
    outside the fitted range."""
    levels = uncertainty.levels
    try:
        value = float(level)  # numpy scalars too; NaN fails the range check below
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(level, bool) or not levels[0] <= value <= levels[-1]:
        fitted = ", ".join(f"{v:g}" for v in levels)
        raise InputError(f"interval level must be a number between {levels[0]:g} and {levels[-1]:g} (the bundle's "
                         f"intervals were fitted for {fitted}), got {level!r}")
    return float(np.interp(value, levels, uncertainty.factors))


def posterior_covariance(j_support: np.ndarray, damping: np.ndarray) -> np.ndarray:
    """``(J^T J + Lambda)^-1`` ``(P, P)`` float64 (the posterior covariance over ``sigma^2``) from the support
    Jacobian ``(k * out, P)`` and ``Lambda``'s diagonal ``(P,)``; with no support rows, the prior's ``Lambda^-1``."""
    j = j_support.astype(np.float64)
    precision = j.T @ j + np.diag(damping.astype(np.float64))
    return np.linalg.inv(precision)


def posterior_spread(j_query: np.ndarray, covariance: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Predictive standard deviation ``sigma * sqrt(1 + j^T C j)`` ``(n, out)`` from query Jacobians ``(n, out, P)``,
    ``C`` ``(P, P)`` and ``sigma`` ``(out,)``."""
    j = j_query.astype(np.float64)
    quad = np.einsum("nop,pq,noq->no", j, covariance, j)
    return np.asarray(sigma, np.float64) * np.sqrt(1.0 + np.maximum(quad, 0.0))


def conformal_spread(support_mse: np.ndarray, tau: np.ndarray, n: int) -> np.ndarray:
    """``sqrt(support_mse + tau^2)`` ``(n, out)``: the same spread for every query of the task."""
    spread = np.sqrt(np.asarray(support_mse, np.float64) + np.asarray(tau, np.float64) ** 2)
    return np.broadcast_to(spread, (n, len(spread))).copy()


def variance_reduction(j_candidates: np.ndarray, covariance: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each candidate ``k``, how much taking a reference point there lowers the integrated predictive variance
    over all candidates, ``sum_c sum_o w_o (var_co - var'_co)`` ``(m,)``.

    ``j_candidates`` ``(m, out, P)``, ``covariance`` ``C = (J^T J + Lambda)^-1``, ``weights`` ``w_o`` ``(out,)``
    (``(sigma_o y_std_o)^2``: variances in physical units). With ``J_k`` the candidate's rows, the posterior after
    it is ``C' = C - C J_k^T S^-1 J_k C``, ``S = I + J_k C J_k^T`` (Woodbury), so the reduction at ``c`` is
    ``j_c^T C J_k^T S^-1 J_k C j_c``: a trace, no new solve per pair.
    """
    m, out, p = j_candidates.shape
    j = j_candidates.astype(np.float64)
    w = np.asarray(weights, np.float64)
    rows = j.reshape(m * out, p)
    cross = (rows @ covariance @ rows.T).reshape(m * out, m, out)  # [c*o, k, r] = j_co^T C j_kr
    w_rows = np.tile(w, m)  # the weight of row c*o
    scores = np.empty(m)
    for k in range(m):
        b = cross[:, k, :]  # (m * out, out): j_co^T C J_k^T
        s = np.eye(out) + b[k * out:(k + 1) * out]
        scores[k] = float(w_rows @ (b * np.linalg.solve(s, b.T).T).sum(1))
    return scores


def _design_gain(a: np.ndarray, b: np.ndarray, sets: np.ndarray, out: int) -> np.ndarray:
    """Integrated-variance reduction of each candidate set ``(n, s)`` taken together: ``tr((I + A_SS)^-1 B_SS)``
    ``(n,)`` over the sets' rows, with ``A = R C R^T`` and ``B = R C G C R^T`` precomputed on all candidate rows
    ``R`` (``G = R^T W R``: the weighted integral), by Woodbury as in :func:`variance_reduction`."""
    idx = (sets[:, :, None] * out + np.arange(out)).reshape(len(sets), -1)  # (n, s * out) row numbers
    a_ss = a[idx[:, :, None], idx[:, None, :]] + np.eye(idx.shape[1])
    b_ss = b[idx[:, :, None], idx[:, None, :]]
    return np.trace(np.linalg.solve(a_ss, b_ss), axis1=1, axis2=2)


def plan_design(j_candidates: np.ndarray, covariance: np.ndarray, weights: np.ndarray, count: int,
                exclude: np.ndarray | None = None, max_passes: int = 20) -> np.ndarray:
    """The ``count`` distinct candidates that, read together, most lower the integrated predictive variance over
    all candidates (the same criterion as :func:`variance_reduction`, for a set): ``(count,)`` indices.

    The readings do not enter the posterior covariance, so a whole calibration can be planned before the first
    reading. Greedy picks start the design; then each planned point is exchanged for the candidate that improves
    the set most (Fedorov's exchange) until no exchange helps. ``covariance`` is the posterior after the points
    already taken, ``exclude`` ``(m,)`` booleans marks candidates that may not be picked.
    """
    m, out, p = j_candidates.shape
    rows = j_candidates.astype(np.float64).reshape(m * out, p)
    w_rows = np.tile(np.asarray(weights, np.float64), m)
    rc = rows @ covariance
    a = rc @ rows.T
    b = rc @ ((rows.T * w_rows) @ rows) @ rc.T
    allowed = np.ones(m, bool) if exclude is None else ~np.asarray(exclude, bool)
    count = min(count, int(allowed.sum()))
    chosen: list[int] = []
    for _ in range(count):
        free = np.flatnonzero(allowed & ~np.isin(np.arange(m), chosen))
        gains = _design_gain(a, b, np.array([chosen + [j] for j in free]), out)
        chosen.append(int(free[np.argmax(gains)]))
    best = float(_design_gain(a, b, np.array([chosen]), out)[0]) if chosen else 0.0
    for _ in range(max_passes if count > 1 else 0):
        improved = False
        for pos in range(count):
            others = chosen[:pos] + chosen[pos + 1:]
            free = np.flatnonzero(allowed & ~np.isin(np.arange(m), others))
            sets = np.array([others[:pos] + [j] + others[pos:] for j in free])
            gains = _design_gain(a, b, sets, out)
            k = int(np.argmax(gains))
            if gains[k] > best * (1 + 1e-9) + 1e-300:
                chosen, best, improved = [int(v) for v in sets[k]], float(gains[k]), True
        if not improved:
            break
    return np.asarray(chosen, dtype=np.int64)


def farthest_candidate(candidates: np.ndarray, support: np.ndarray | None) -> np.ndarray:
    """Gradient learners' heuristic: each candidate's distance to its nearest support point ``(m,)`` (standardised
    inputs; pick the largest: fill the operating range). Without support, minus the distance to the candidates'
    centroid (start in the middle of the range)."""
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    if support is None or len(support) == 0:
        return -np.linalg.norm(c - c.mean(0), axis=1)
    s = support.reshape(len(support), -1).astype(np.float64)
    return np.sqrt(((c[:, None, :] - s[None, :, :]) ** 2).sum(-1)).min(1)
