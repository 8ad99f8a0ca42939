"""Sensor-calibration task families: shapes, determinism, physics sanity, inverse curves, unit spread."""

from __future__ import annotations

import numpy as np
import pytest

from metaedge.sdk.tasks import TaskBatch, family_names, make_family

NAMES = ["sensor-ntc", "sensor-loadcell", "sensor-pressure"]


def _units(name: str, n: int, seed: int = 0) -> list[dict]:
    fam, rng = make_family(name), np.random.default_rng(seed)
    return [fam.draw_unit(rng) for _ in range(n)]


def _grid(fam, n: int = 201, temp: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """True values ``(n,)`` over the full range and secondary inputs ``(n, n_aux)`` at ``temp``."""
    t = getattr(fam, "t_ref", 25.0) if temp is None else temp
    return np.linspace(*fam.y_range, n), np.full((n, len(fam.aux_ranges)), t)


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_described(name):
    assert name in family_names()
    fam = make_family(name)
    d = fam.describe()
    assert d["name"] == name and d["output_dim"] == 1 and d["primary_input"] == 0
    assert d["normalize"] and d["calibration"]
    n_in = fam.input_shape[0]
    assert len(fam.input_names) == len(fam.input_units) == n_in == 1 + len(fam.aux_ranges)
    assert len(fam.output_names) == len(fam.output_units) == 1


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_ranges(name):
    fam = make_family(name)
    task = fam.sample_task(np.random.default_rng(3), shots=5, queries=40)
    n_in = fam.input_shape[0]
    assert task.x_support.shape == (5, n_in) and task.x_query.shape == (40, n_in)
    assert task.y_support.shape == (5, 1) and task.y_query.shape == (40, 1)
    for a in (task.x_support, task.y_support, task.x_query, task.y_query):
        assert a.dtype == np.float32 and np.isfinite(a).all()
    y = np.concatenate([task.y_support, task.y_query])
    assert y.min() >= fam.y_range[0] and y.max() <= fam.y_range[1]
    for j, (lo, hi) in enumerate(fam.aux_ranges, start=1):  # measured temperature: range +- noise
        x = np.concatenate([task.x_support, task.x_query])[:, j]
        assert x.min() > lo - 1.0 and x.max() < hi + 1.0
    assert task.info and all(type(v) is float for v in task.info.values())
    batch = fam.sample_batch(np.random.default_rng(3), n_tasks=3, shots=4, queries=6)
    assert isinstance(batch, TaskBatch) and batch.x_query.shape == (3, 6, n_in)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    fam = make_family(name)
    a, b = (fam.sample_task(np.random.default_rng(7), 6, 20) for _ in range(2))
    c = fam.sample_task(np.random.default_rng(8), 6, 20)
    for f in ("x_support", "y_support", "x_query", "y_query"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.info == b.info
    assert a.info != c.info and not np.array_equal(a.x_query, c.x_query)


@pytest.mark.parametrize("name", NAMES)
def test_curve_inverts_noiseless_generation(name):
    fam = make_family(name)
    temps = [None, *fam.aux_ranges[0]] if fam.aux_ranges else [None]
    span = fam.y_range[1] - fam.y_range[0]
    for info in _units(name, 5):
        for temp in temps:
            y, aux = _grid(fam, temp=temp)
            raw = fam.raw_reading(info, y, aux)
            back = fam.curve(info, np.column_stack([raw, aux]))
            assert back.shape == (len(y), 1) and back.dtype == np.float32
            np.testing.assert_allclose(back[:, 0], y, atol=1e-5 * span)


@pytest.mark.parametrize("name", NAMES)
def test_curve_matches_noisy_samples_within_noise(name):
    fam = make_family(name)
    task = fam.sample_task(np.random.default_rng(11), 10, 200)
    err = np.abs(fam.curve(task.info, task.x_query) - task.y_query)
    # NTC: quantisation + ~1 LSB noise at ~3 counts/K; bridges: temperature-sensor scatter and ADC noise
    tol = {"sensor-ntc": 3.0, "sensor-loadcell": 0.05, "sensor-pressure": 0.3}[name]
    assert err.max() < tol


def test_ntc_counts_monotone_and_in_adc_range():
    fam = make_family("sensor-ntc")
    full = 2**fam.bits
    for info in _units("sensor-ntc", 10):
        y, aux = _grid(fam, 500)
        counts = fam.raw_reading(info, y, aux)
        assert np.all(np.diff(counts) < 0)  # NTC on the low side of the divider: counts fall with T
        assert 0 < counts.min() and counts.max() < full - 1
    task = fam.sample_task(np.random.default_rng(0), 20, 500)
    x = np.concatenate([task.x_support, task.x_query])[:, 0]
    np.testing.assert_array_equal(x, np.rint(x))
    assert x.min() >= 0 and x.max() <= full - 1


def test_ntc_units_differ_by_realistic_amounts():
    fam = make_family("sensor-ntc")
    counts = np.linspace(200, 3900, 100)[:, None]
    temps = np.stack([fam.curve(info, counts)[:, 0] for info in _units("sensor-ntc", 50)])
    spread = temps.max(0) - temps.min(0)
    assert spread.min() > 0.3  # manufacturing spread is present everywhere
    assert spread.max() < 5.0  # ... but two units at the same count agree within a few degC


def test_ntc_linear_fit_leaves_clear_error():
    fam = make_family("sensor-ntc")
    task = fam.sample_task(np.random.default_rng(5), 5, 2000)
    x, y = task.x_query[:, 0].astype(np.float64), task.y_query[:, 0].astype(np.float64)
    a = np.column_stack([x, np.ones_like(x)])
    resid = y - a @ np.linalg.lstsq(a, y, rcond=None)[0]
    assert np.sqrt(np.mean(resid**2)) > 3.0  # degC: the NTC is strongly nonlinear


def test_loadcell_zero_and_full_scale():
    fam = make_family("sensor-loadcell")
    cap, ro = fam.y_range[1], fam.rated_output
    for info in _units("sensor-loadcell", 20):
        y, aux = _grid(fam, temp=fam.t_ref)
        s = fam.raw_reading(info, y, aux)
        assert s[0] == pytest.approx(info["zero"]) and abs(s[0]) <= 0.02 * ro  # zero balance
        np.testing.assert_allclose(s - s[0], ro * y / cap, atol=1.5e-3 * ro)  # ~RO * load / capacity
        assert np.all(np.diff(s) > 0)
        warm = fam.raw_reading(info, y, np.full_like(aux, 40.0))  # small but nonzero temperature effect
        assert 0 < np.abs(warm - s).max() < 2e-3 * ro


def test_loadcell_units_differ():
    fam = make_family("sensor-loadcell")
    x = np.array([[1.0, 20.0], [2.0, 30.0]])
    loads = np.stack([fam.curve(info, x)[:, 0] for info in _units("sensor-loadcell", 50)])
    spread = loads.max(0) - loads.min(0)
    assert np.all(spread > 0.1) and np.all(spread < 3.0)  # kg: zero balance +-2 % RO dominates


def test_pressure_increases_with_pressure_and_shows_temperature_cross_sensitivity():
    fam = make_family("sensor-pressure")
    for info in _units("sensor-pressure", 20):
        y, aux = _grid(fam, temp=25.0)
        cold, ref, hot = (fam.raw_reading(info, y, np.full_like(aux, t)) for t in (-20.0, 25.0, 85.0))
        assert np.all(np.diff(ref) > 0) and np.all(np.diff(hot) > 0)
        span = ref[-1] - ref[0]
        assert 45.0 <= span <= 90.0 * 1.01  # mV at 3 V excitation
        assert (hot[-1] - hot[0]) < 0.92 * span and (cold[-1] - cold[0]) > 1.05 * span  # TCS ~ -0.2 %/degC
        # the same reading means a clearly different pressure at another temperature
        p = fam.curve(info, np.array([[ref[-1], 25.0], [ref[-1], 85.0]]))[:, 0]
        assert p[1] - p[0] > 5.0


def test_pressure_units_differ():
    fam = make_family("sensor-pressure")
    x = np.array([[50.0, 25.0]])
    p = np.array([fam.curve(info, x)[0, 0] for info in _units("sensor-pressure", 50)])
    assert p.max() - p.min() > 10.0  # uncompensated parts: offset and span spread are large


# ------------------------------------------------------------------------------------------------ lots
def test_lot_a_is_the_default_and_draws_the_datasheet_spreads():
    """Lot A reproduces the original per-unit draws exactly (the datasheet table, drawn in the same order)."""
    rng = np.random.default_rng(0)
    expected = {"zero": rng.triangular(0.0, 20.0, 35.0), "tc_zero": rng.uniform(-0.015, 0.015),
                "span": rng.triangular(45.0, 60.0, 90.0), "tcs": rng.uniform(-0.0022, -0.0016),
                "nonlinearity": rng.uniform(-0.0025, 0.0025), "noise": 0.01}
    for fam in (make_family("sensor-pressure"), make_family("sensor-pressure", lot="A")):
        assert fam.draw_unit(np.random.default_rng(0)) == expected
        assert fam.describe()["lot"] == "A"
    rng = np.random.default_rng(1)
    ntc = make_family("sensor-ntc").draw_unit(np.random.default_rng(1))
    assert ntc["r25_ohm"] == 10e3 * (1 + rng.uniform(-0.02, 0.02))
    assert ntc["b25_85_k"] == 3977.0 * (1 + rng.uniform(-0.0075, 0.0075))


@pytest.mark.parametrize("name", NAMES)
def test_lot_b_is_a_valid_family_whose_units_differ_from_lot_a(name):
    a, b = make_family(name, lot="A"), make_family(name, lot="B")
    assert b.describe()["lot"] == "B" and b.describe()["input_names"] == a.describe()["input_names"]
    temps = [None, *b.aux_ranges[0]] if b.aux_ranges else [None]
    span = b.y_range[1] - b.y_range[0]
    for info in [b.draw_unit(np.random.default_rng(s)) for s in range(5)]:
        for temp in temps:
            y, aux = _grid(b, temp=temp)
            back = b.curve(info, np.column_stack([b.raw_reading(info, y, aux), aux]))
            np.testing.assert_allclose(back[:, 0], y, atol=1e-5 * span)
    # the same raw readings mean systematically different values in the two lots (a lot A prior is off for B):
    # the mean curves differ by more than the lot A bundles' 3-point errors (docs/results.md: 0.25 degC,
    # 0.009 kg, 0.68 kPa)
    x = a.sample_task(np.random.default_rng(2), 0, 200).x_query
    mean_a = np.mean([a.curve(a.draw_unit(np.random.default_rng(s)), x) for s in range(100)], axis=0)
    mean_b = np.mean([b.curve(b.draw_unit(np.random.default_rng(s)), x) for s in range(100)], axis=0)
    shift = {"sensor-ntc": 0.3, "sensor-loadcell": 0.05, "sensor-pressure": 5.0}[name]
    assert np.sqrt(np.mean((mean_a - mean_b) ** 2)) > shift


def test_pressure_lot_b_spreads_follow_its_table():
    fam = make_family("sensor-pressure", lot="B")
    units = [fam.draw_unit(np.random.default_rng(s)) for s in range(300)]
    tcs = np.array([u["tcs"] for u in units])
    nl = np.array([u["nonlinearity"] for u in units])
    span = np.array([u["span"] for u in units])
    assert tcs.min() >= -0.0030 and tcs.max() <= -0.0024
    assert nl.min() >= 0.003 and nl.max() <= 0.008
    assert span.min() >= 35.0 and span.max() <= 60.0
    assert abs(np.mean(span) - (35.0 + 45.0 + 60.0) / 3) < 1.0  # a triangular distribution's mean


def test_unknown_lot_is_one_sentence():
    from metaedge.errors import InputError

    with pytest.raises(InputError, match="unknown lot 'C' for sensor-pressure; choose one of A, B"):
        make_family("sensor-pressure", lot="C")
