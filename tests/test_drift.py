"""Drift detectors (knowledge/drift.py): hand-computed sequences and their statistical properties."""

from __future__ import annotations

import numpy as np
import pytest

from metaedge.errors import InputError
from metaedge.knowledge import drift


def test_cusum_golden_sequence():
    # k=0.5, h=2: S+ = 0, 0.5, 2.0 (not > 2), 3.5 -> alarm at index 3, upward
    res = drift.cusum([0.0, 1.0, 2.0, 2.0, -1.0], scale=1.0, k=0.5, h=2.0)
    assert res.alarm and res.index == 3 and res.statistic == pytest.approx(3.5)
    assert res.evidence.statistics == pytest.approx((0.0, 0.5, 2.0, 3.5))
    assert res.evidence.direction == "up" and res.evidence.residuals == (0.0, 1.0, 2.0, 2.0)


def test_cusum_downward_and_scale():
    # residuals in physical units with scale 0.5: z = -2, -2 -> S- = 1.5, 3.0 > h=2.5 at index 1
    res = drift.cusum([-1.0, -1.0, 5.0], scale=0.5, k=0.5, h=2.5)
    assert res.alarm and res.index == 1 and res.statistic == pytest.approx(3.0) and res.evidence.direction == "down"


def test_page_hinkley_golden_sequence():
    # delta=0.5, lambda=1.5: running means 0, 0, 1, 1.5; upward sums -0.5, -1, 0.5, 1.5; minimum -1;
    # gains 0, 0, 1.5 (not > 1.5), 2.5 -> alarm at index 3
    res = drift.page_hinkley([0.0, 0.0, 3.0, 3.0], scale=1.0, delta=0.5, lam=1.5)
    assert res.alarm and res.index == 3 and res.statistic == pytest.approx(2.5)
    assert res.evidence.statistics == pytest.approx((0.0, 0.0, 1.5, 2.5)) and res.evidence.direction == "up"


def test_threshold_golden_sequence():
    res = drift.threshold([0.1, -0.2, 0.35, -0.4], scale=0.1, k=3.0)
    assert res.alarm and res.index == 2 and res.statistic == pytest.approx(3.5) and res.evidence.direction == "up"


def test_no_alarm_reports_the_largest_statistic():
    res = drift.cusum([0.0, 1.0, 1.0, -1.0], scale=1.0, k=0.5, h=5.0)
    assert not res.alarm and res.index is None and res.statistic == pytest.approx(1.0)
    assert res.evidence.direction is None and len(res.evidence.residuals) == 4


def test_pooled_scale_golden():
    # warm-up 3: differences (1, 1) and (0, 2); variances mean(d^2)/2 = 0.5 and 1.0, 2 degrees of freedom each;
    # pooled sigma = sqrt(0.75); the 4th check is not warm-up
    assert drift.pooled_scale([[1.0, 2.0, 3.0, 99.0], [10.0, 10.0, 12.0]], warmup=3) == pytest.approx(np.sqrt(0.75))


def test_unit_scales_shrink_toward_the_fleet():
    # prior_df 2: unit 1 (0.5 * 2 + 0.75 * 2) / 4, unit 2 (1.0 * 2 + 0.75 * 2) / 4, unit 3 (one check) the fleet's
    got = drift.unit_scales([[1.0, 2.0, 3.0], [10.0, 10.0, 12.0], [5.0]], warmup=3, prior_df=2.0)
    assert got == pytest.approx(np.sqrt([0.625, 0.875, 0.75]))


def test_scales_recover_sigma_despite_unit_biases():
    rng = np.random.default_rng(3)
    sigmas = rng.uniform(0.1, 0.3, size=400)
    seqs = [rng.normal(rng.normal(0, 5), s, size=12) for s in sigmas]
    assert drift.pooled_scale(seqs, warmup=8) == pytest.approx(np.sqrt(np.mean(sigmas**2)), rel=0.05)
    # shrinkage beats both the fleet value and each unit's own estimate (mean squared error of sigma)
    own = np.sqrt([np.mean(np.diff(s[:8]) ** 2) / 2 for s in seqs])
    shrunk = drift.unit_scales(seqs, warmup=8)
    fleet = drift.pooled_scale(seqs, warmup=8)
    mse = lambda est: float(np.mean((est - sigmas) ** 2))  # noqa: E731
    assert mse(shrunk) < mse(own) and mse(shrunk) < mse(np.full(400, fleet))


def _alarm_rate(detector: str, horizon: int = 100, runs: int = 3000) -> float:
    """False alarms per 1,000 checks of i.i.d. N(0, 1) residuals (monitoring stops at the first alarm)."""
    rng = np.random.default_rng(0)
    alarms = checks = 0
    for _ in range(runs):
        res = drift.detect(rng.standard_normal(horizon), 1.0, detector)
        alarms += res.alarm
        checks += res.index + 1 if res.alarm else horizon
    return 1000 * alarms / checks


@pytest.mark.parametrize(("detector", "expected"), [("cusum", 1000 / 465), ("page-hinkley", 1.6), ("threshold", 2.7)])
def test_false_alarm_rate_is_the_stated_order(detector, expected):
    # CUSUM k=0.5 h=5: two-sided in-control ARL 465 (tables); Page-Hinkley: the rate stated in the docstring;
    # threshold 3 sigma: P(|z| > 3) = 0.27 %
    assert _alarm_rate(detector) == pytest.approx(expected, rel=0.35)


@pytest.mark.parametrize(("detector", "max_mean_delay"), [("cusum", 6), ("page-hinkley", 10), ("threshold", 30)])
def test_alarm_after_a_step(detector, max_mean_delay):
    rng = np.random.default_rng(1)
    delays = []
    for _ in range(200):
        r = rng.standard_normal(80)
        r[40:] += 2.0  # a 2-sigma zero shift at check 40
        res = drift.detect(r, 1.0, detector)
        assert res.alarm
        if res.index >= 40:
            delays.append(res.index - 40)
    # at most ~10 % alarm before the shift (40 checks at the stated false-alarm rates)
    assert len(delays) >= 170 and np.mean(delays) < max_mean_delay
    # CUSUM's 2-sigma run length is about 4 checks (tables)
    if detector == "cusum":
        assert 2 < np.mean(delays) < 5


def test_detect_with_a_threshold():
    # the golden CUSUM sequence: statistic 3.5 at index 3 crosses h=3 but not the default h=5
    r = [0.0, 1.0, 2.0, 2.0, -1.0]
    assert drift.detect(r, 1.0, "cusum", limit=3.0).index == 3 and not drift.detect(r, 1.0, "cusum").alarm
    assert drift.detect([0.1, 0.35], 0.1, "threshold", limit=3.6).alarm is False
    assert drift.detect([0.0, 0.0, 3.0, 3.0], 1.0, "page-hinkley", limit=1.5).index == 3


def test_bad_input_is_one_sentence():
    with pytest.raises(InputError, match="NaN"):
        drift.cusum([0.0, np.nan], 1.0)
    with pytest.raises(InputError, match="positive"):
        drift.page_hinkley([0.0], 0.0)
    with pytest.raises(InputError, match="unknown drift detector"):
        drift.detect([0.0], 1.0, "ewma")
    with pytest.raises(InputError, match="no unit has 2"):
        drift.pooled_scale([[1.0]])
