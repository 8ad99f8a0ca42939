"""Sequential change detectors over a unit's in-service check residuals (numpy only).

A calibrated unit is checked in service against reference values; its *residuals* ``r_t = reference - predicted``
(physical units, one value per check: the mean over that check's reference points, in time order) are zero-mean
noise while the calibration holds, and move away from zero when the unit drifts (a zero shift, ageing). Each
detector turns the sequence into a statistic and raises an alarm the first time the statistic crosses its
threshold.

Everything is in units of the **residual scale** ``sigma``: the standard deviation of one check's residual while
the unit is in control. It is estimated from the *warm-up* checks (the first ``warmup`` checks after each
calibration, 8 by default: two months of weekly checks, before drift has had time to build up) through successive
differences, which ignore each unit's constant calibration bias: :func:`pooled_scale` pools them over the units
of a bundle (they share the outputs' physical units and the measurement noise), and :func:`unit_scales` shrinks
each unit's own estimate toward that fleet value, because units differ in how well a few-point calibration fits
them, and one unit's 8 checks alone estimate its scale only to about +-30 %. A caller that knows the noise (a
datasheet, the bundle's predictive interval) passes ``scale`` itself.

Detectors (parameters in units of sigma):

* **CUSUM** (two-sided, Page 1954): ``S+_t = max(0, S+_{t-1} + z_t - k)``, ``S-_t = max(0, S-_{t-1} - z_t - k)``
  with ``z_t = (r_t - target) / sigma``; alarm when ``max(S+, S-) > h``. ``target = 0``: a calibrated unit must read
  the reference; what is due for recalibration is a unit that reads off, not merely one that changed. Defaults
  ``k = 0.5`` (the allowance that is optimal for a shift of 1 sigma) and ``h = 5``: in-control average run length
  about 465 checks (two-sided; Montgomery, *Introduction to Statistical Quality Control*, table of CUSUM ARLs),
  i.e. about 2 false alarms per 1,000 unit-checks, and an alarm about 10 checks after a 1-sigma shift, 4 after a
  2-sigma shift.
* **Page-Hinkley** (two-sided, Page 1954 / Hinkley 1971, as used for concept drift, e.g. Gama et al. 2014):
  ``m_t = sum_{i<=t} (z_i - zbar_i - delta)``, with ``zbar_i`` the running mean of ``z``; alarm when ``m_t - min_{i<=t}
  m_i > lambda`` (upward), likewise downward. It compares with the unit's own running mean, so it detects a
  *change* even of a unit that was biased from the start, but part of a slow ramp is absorbed into the running
  mean. Defaults ``delta = 0.5``, ``lambda = 5``: by simulation (``tests/test_drift.py``) about 1.6 false alarms
  per 1,000 checks of i.i.d. Gaussian residuals over 100-check horizons, the same order as the CUSUM, and an
  alarm about 16 checks after a 1-sigma step (the running mean absorbs part of it).
* **Fixed threshold** (the rule of thumb a calibration lab uses): alarm at the first ``|z_t| > k``; ``k = 3`` gives a
  false-alarm probability of 0.27 % per check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from metaedge.errors import InputError

DetectorName = Literal["page-hinkley", "cusum", "threshold"]
#: detector names :func:`detect` accepts (``metaedge kb alerts --detector``)
DETECTORS: tuple[str, ...] = ("page-hinkley", "cusum", "threshold")
#: 1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian standard deviation
_MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True)
class DriftEvidence:
    """Why a detector alarmed (or did not): what a reviewer needs to judge a recalibration.

    ``statistics`` ``(n,)``: the detector's statistic after each check (in units of sigma); ``residuals`` ``(n,)``:
    the residuals it read, physical units; ``direction``: ``"up"`` (the unit reads low: reference above the
    prediction), ``"down"``, or None without alarm.
    """

    detector: str
    parameters: tuple[tuple[str, float], ...]
    scale: float
    target: float
    threshold: float
    residuals: tuple[float, ...]
    statistics: tuple[float, ...]
    direction: str | None

    def as_dict(self, last: int | None = None) -> dict:
        """JSON-ready form; ``last``: keep only the last so many residuals and statistics."""
        d = asdict(self)
        d["parameters"] = dict(self.parameters)
        if last is not None:
            d["residuals"], d["statistics"] = list(self.residuals[-last:]), list(self.statistics[-last:])
        return d


@dataclass(frozen=True)
class DriftResult:
    """A detector's verdict over one residual sequence.

    ``index``: 0-based position of the check at which the statistic first crossed the threshold (None: no
    alarm); ``statistic``: its value there (without alarm: its largest value, to show how close it came).
    """

    alarm: bool
    index: int | None
    statistic: float
    evidence: DriftEvidence


def _residuals(residuals: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
    r = np.asarray(residuals, dtype=np.float64)
    if r.ndim != 1:
        raise InputError(f"residuals must be one value per check (a 1-D sequence), got shape {r.shape}")
    if not np.isfinite(r).all():
        raise InputError("residuals hold NaN or infinite values; drop the damaged check readings and retry")
    return r


def _scale(scale: float) -> float:
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"the residual scale must be a positive number, got {scale}; estimate it with "
                         "pooled_scale or pass the known noise")
    return float(scale)


def _warmup_variances(sequences: Sequence[Sequence[float]], warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: the variance estimate ``mean(diff^2) / 2`` of its first ``warmup`` residuals and its degrees of
    freedom (the number of successive differences; 0 for a unit with fewer than 2 residuals, variance 0)."""
    if warmup < 2:
        raise InputError(f"warmup must be at least 2 checks, got {warmup}")
    var, df = [], []
    for seq in sequences:
        d = np.diff(_residuals(seq)[:warmup])
        var.append(float(np.mean(d**2)) / 2 if len(d) else 0.0)
        df.append(len(d))
    return np.array(var), np.array(df, dtype=np.float64)


def pooled_scale(sequences: Sequence[Sequence[float]], warmup: int = 8) -> float:
    """The fleet's residual scale sigma from the first ``warmup`` residuals of each unit's sequence (physical units).

    Successive differences (``r_{t+1} - r_t`` ~ N(0, 2 sigma^2) in control) ignore each unit's constant calibration
    bias, and a slow ramp adds only its small weekly step to them; the variances ``mean(diff^2) / 2`` are pooled over
    the units, weighted by their degrees of freedom. Units with fewer than 2 residuals contribute nothing. Raises
    :class:`InputError` when no unit has 2 residuals or they are all equal.
    """
    var, df = _warmup_variances(sequences, warmup)
    if df.sum() == 0:
        raise InputError(f"no unit has 2 or more checks to estimate the residual scale from (warm-up {warmup}); "
                         "pass the scale or wait for more in-service checks")
    sigma = float(np.sqrt(np.sum(df * var) / df.sum()))
    if sigma <= 0:
        raise InputError("all warm-up residuals are equal, so their scale is 0; pass the known noise as the scale")
    return sigma


def unit_scales(sequences: Sequence[Sequence[float]], warmup: int = 8, prior_df: float = 4.0) -> np.ndarray:
    """Each unit's residual scale ``(n_units,)``: its own warm-up variance shrunk toward the fleet's.

    ``sigma_u^2 = (prior_df * sigma_fleet^2 + df_u * s_u^2) / (prior_df + df_u)`` (the posterior mean of a
    scaled-inverse-chi^2 prior with ``prior_df`` degrees of freedom centred on :func:`pooled_scale`). Units of one
    bundle differ in how well the few-point calibration fits them (temperature and nonlinearity errors left over),
    so one fleet scale makes the worst-fitted units alarm falsely; one unit's 7 warm-up differences alone estimate
    its scale only to about +-30 %. A unit without warm-up checks gets the fleet's scale.
    """
    var, df = _warmup_variances(sequences, warmup)
    fleet = pooled_scale(sequences, warmup) ** 2
    return np.sqrt((prior_df * fleet + df * var) / (prior_df + df))


def cusum(residuals: np.ndarray, scale: float, k: float = 0.5, h: float = 5.0, target: float = 0.0) -> DriftResult:
    """Two-sided CUSUM over ``residuals`` ``(n,)`` (physical units) with allowance ``k`` and threshold ``h`` in units
    of ``scale``; see the module docstring."""
    r, s = _residuals(residuals), _scale(scale)
    z = (r - target) / s
    hi = lo = 0.0
    stat = np.empty(len(z))
    for t, zt in enumerate(z):
        hi, lo = max(0.0, hi + zt - k), max(0.0, lo - zt - k)
        stat[t] = max(hi, lo)
        if stat[t] > h:
            return _result("cusum", (("k", k), ("h", h)), s, target, h, r[: t + 1], stat[: t + 1],
                           "up" if hi >= lo else "down")
    return _result("cusum", (("k", k), ("h", h)), s, target, h, r, stat, None)


def page_hinkley(residuals: np.ndarray, scale: float, delta: float = 0.5, lam: float = 5.0) -> DriftResult:
    """Two-sided Page-Hinkley test over ``residuals`` ``(n,)`` with tolerance ``delta`` and threshold ``lam`` in
    units of ``scale``; see the module docstring."""
    r, s = _residuals(residuals), _scale(scale)
    z = r / s
    up = down = 0.0  # cumulative sums of (z - zbar - delta) and (zbar - z - delta)
    up_min = down_min = 0.0
    mean = 0.0
    stat = np.empty(len(z))
    for t, zt in enumerate(z):
        mean += (zt - mean) / (t + 1)
        up += zt - mean - delta
        down += mean - zt - delta
        up_min, down_min = min(up_min, up), min(down_min, down)
        gain_up, gain_down = up - up_min, down - down_min
        stat[t] = max(gain_up, gain_down)
        if stat[t] > lam:
            return _result("page-hinkley", (("delta", delta), ("lambda", lam)), s, 0.0, lam, r[: t + 1],
                           stat[: t + 1], "up" if gain_up >= gain_down else "down")
    return _result("page-hinkley", (("delta", delta), ("lambda", lam)), s, 0.0, lam, r, stat, None)


def threshold(residuals: np.ndarray, scale: float, k: float = 3.0, target: float = 0.0) -> DriftResult:
    """Fixed-threshold rule: alarm at the first check with ``|residual - target| > k * scale``."""
    r, s = _residuals(residuals), _scale(scale)
    stat = np.abs(r - target) / s
    over = np.flatnonzero(stat > k)
    if len(over):
        t = int(over[0])
        return _result("threshold", (("k", k),), s, target, k, r[: t + 1], stat[: t + 1],
                       "up" if r[t] > target else "down")
    return _result("threshold", (("k", k),), s, target, k, r, stat, None)


def _result(name: str, params: tuple[tuple[str, float], ...], scale: float, target: float, limit: float,
            r: np.ndarray, stat: np.ndarray, direction: str | None) -> DriftResult:
    """The verdict: alarm at the last statistic when ``direction`` is set, else the largest statistic."""
    evidence = DriftEvidence(name, tuple((k, float(v)) for k, v in params), scale, float(target), float(limit),
                             tuple(map(float, r)), tuple(map(float, stat)), direction)
    if direction is not None:
        return DriftResult(True, len(stat) - 1, float(stat[-1]), evidence)
    return DriftResult(False, None, float(stat.max()) if len(stat) else 0.0, evidence)


def detect(residuals: np.ndarray, scale: float, detector: str = "cusum", limit: float | None = None
           ) -> DriftResult:
    """Run the named detector (:data:`DETECTORS`) with its stated default parameters; ``limit`` replaces its alarm
    threshold (CUSUM ``h``, Page-Hinkley ``lambda``, the fixed rule's ``k``; in units of the scale), e.g. one set
    from a fleet's history for a wanted false-alarm rate (``benchmarks/drift.py`` shows how)."""
    if limit is not None and not (np.isfinite(limit) and limit > 0):
        raise InputError(f"the detector threshold must be a positive number of scale units, got {limit}")
    if detector == "cusum":
        return cusum(residuals, scale) if limit is None else cusum(residuals, scale, h=limit)
    if detector == "page-hinkley":
        return page_hinkley(residuals, scale) if limit is None else page_hinkley(residuals, scale, lam=limit)
    if detector == "threshold":
        return threshold(residuals, scale) if limit is None else threshold(residuals, scale, k=limit)
    raise InputError(f"unknown drift detector {detector!r}; choose one of {', '.join(DETECTORS)}")
