"""Scenario 5: units whose zero drifts in service, checked weekly; how soon each detector alarms, how often falsely.

Run (from the repository root)::

    .venv/bin/python benchmarks/drift.py            # 2,000 units, 104 weeks (about 10 s)
    .venv/bin/python benchmarks/drift.py --quick    # 400 units

Simulation (built-in ``sensor-pressure`` family, :mod:`metaedge.sdk.tasks.sensors`: uncompensated MEMS bridge,
0..100 kPa, per-unit zero, span, temperature coefficients and nonlinearity from the datasheet spreads):

* **Calibration** (week 0): each unit is calibrated at 3 reference pressures (10, 50, 90 kPa) at 25 +- 2 degC in the
  lab: its zero and span are fitted by least squares, its temperature coefficients and nonlinearity taken as the
  datasheet's typical values. What remains (temperature and nonlinearity error, noise) is the unit's residual
  error in service: about 0.1 kPa rms per check, not Gaussian and different per unit (10th..90th percentile of the
  units' scatter 0.05..0.16 kPa): a realistic check residual, not the i.i.d. noise the detectors' tables assume.
* **Weekly check**: 2 reference readings at pressures uniform over the range and the ambient temperature of that
  week (uniform 15..35 degC); the check's residual is the mean of ``reference - reading``.
* **Drift**: half the units are stable for the 104 weeks; the other half start drifting at a week uniform in
  13..78: the bridge zero moves away at a constant rate (a ramp: ageing of the die attach / gel) or jumps once (a
  step: a mechanical shock), in raw mV, with a random sign. Three drift kinds, one third of the drifting units each:
  ramp 0.003 mV/week (about 0.005 kPa/week: 1 sigma after about 20 weeks), ramp 0.01 mV/week, step 0.1 mV (about
  0.17 kPa, 1.7 sigma).
* **Scale**: :func:`metaedge.knowledge.drift.unit_scales` from every unit's first 8 weekly checks (before any drift
  can start), shrunk toward the fleet's, as ``metaedge kb alerts`` does.
* **Detectors** (:mod:`metaedge.knowledge.drift`, their stated default parameters): two-sided CUSUM (k = 0.5, h = 5),
  Page-Hinkley (delta = 0.5, lambda = 5), and the fixed-threshold rule ``|residual| > 3 sigma``. After an alarm the
  unit is recalibrated (the detector restarts on the following checks; the simulated calibration is kept).
  Then again with each detector's threshold matched to the same false-alarm rate (``--rate``, 2 per 1,000
  unit-weeks) by bisection on an independent simulated fleet (seed + 1), so the delays compare like with like.

Figures: **false alarms per 1,000 unit-weeks** (alarms on stable units and before the onset on drifting ones,
per in-control week monitored) and, per drift kind, the **detection delay** in weeks from the onset to the first
alarm at or after it (median and 90th percentile over the detected units), the fraction detected by week 104, and
the zero shift in kPa when the alarm came. Results: ``benchmarks/results/drift.json`` and the table printed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.knowledge import drift
from metaedge.knowledge.drift import pooled_scale, unit_scales
from metaedge.sdk.tasks import make_family

RESULTS = Path(__file__).resolve().parent / "results"
DETECTORS = ("cusum", "page-hinkley", "threshold")
WEEKS = 104
WARMUP = 8
#: drift kinds: (name, ramp rate mV/week, step mV)
KINDS = (("ramp 0.003 mV/wk", 0.003, 0.0), ("ramp 0.01 mV/wk", 0.01, 0.0), ("step 0.1 mV", 0.0, 0.1))
CAL_PRESSURES = np.array([10.0, 50.0, 90.0])


@dataclass(frozen=True)
class SimUnit:
    """One simulated unit's weekly check residuals ``(WEEKS,)`` kPa, drift onset week (None: stable), drift kind
    index, and the true zero shift ``(WEEKS,)`` in kPa at the checks."""

    residuals: np.ndarray
    onset: int | None
    kind: int | None
    shift_kpa: np.ndarray


def _simulate(n_units: int, seed: int) -> list[SimUnit]:
    fam = make_family("sensor-pressure")
    rng = np.random.default_rng(seed)
    typical = {"tc_zero": 0.0, "tcs": -0.0019, "nonlinearity": 0.0}
    units = []
    for i in range(n_units):
        info = fam.draw_unit(rng)
        # calibration: zero and span by least squares at 3 lab points, other coefficients typical
        t_cal = 25.0 + rng.uniform(-2, 2, size=3)
        raw = fam.raw_reading(info, CAL_PRESSURES, t_cal[:, None]) + info["noise"] * rng.standard_normal(3)
        aux_cal = t_cal + fam.aux_noise * rng.standard_normal(3)
        dt = aux_cal - fam.t_ref
        u = CAL_PRESSURES / fam.y_range[1]
        design = np.column_stack([np.ones(3), (1 + typical["tcs"] * dt) * u])
        (zero, span), *_ = np.linalg.lstsq(design, raw, rcond=None)
        model = {**typical, "zero": zero, "span": span}
        # weekly checks, 2 points each
        drifting = i % 2 == 1
        onset = int(rng.integers(13, 79)) if drifting else None
        kind = int(rng.integers(len(KINDS))) if drifting else None
        weeks = np.arange(WEEKS)
        shift_mv = np.zeros(WEEKS)
        if drifting:
            _, rate, step = KINDS[kind]
            sign = rng.choice([-1.0, 1.0])
            after = weeks >= onset
            shift_mv = sign * after * (rate * (weeks - onset + 1) + step)
        p = rng.uniform(*fam.y_range, size=(WEEKS, 2))
        temp = rng.uniform(15.0, 35.0, size=(WEEKS, 1)).repeat(2, 1)
        raw = (fam.raw_reading(info, p.ravel(), temp.reshape(-1, 1)).reshape(WEEKS, 2) + shift_mv[:, None]
               + info["noise"] * rng.standard_normal((WEEKS, 2)))
        t_meas = temp + fam.aux_noise * rng.standard_normal(temp.shape)
        reading = fam.true_value(model, raw.ravel(), t_meas.reshape(-1, 1)).reshape(WEEKS, 2)
        # the zero shift in kPa at mid-range and 25 degC (for reporting)
        shift_kpa = shift_mv / info["span"] * fam.y_range[1]
        units.append(SimUnit((p - reading).mean(1), onset, kind, shift_kpa))
    return units


#: the stated default thresholds: CUSUM h, Page-Hinkley lambda, threshold k
DEFAULTS = {"cusum": 5.0, "page-hinkley": 5.0, "threshold": 3.0}


def _alarms(residuals: np.ndarray, scale: float, detector: str, limit: float, start: int = 0) -> list[int]:
    """Weeks of every alarm from ``start`` on, the detector restarting after each."""
    out = []
    while start < len(residuals):
        res = drift.detect(residuals[start:], scale, detector, limit)
        if not res.alarm:
            break
        out.append(start + res.index)
        start += res.index + 1
    return out


def false_alarm_rate(units: list[SimUnit], scales: np.ndarray, detector: str, limit: float) -> float:
    """False alarms per 1,000 in-control unit-weeks."""
    false = weeks = 0
    for u, s in zip(units, scales):
        end = WEEKS if u.onset is None else u.onset
        false += sum(a < end for a in _alarms(u.residuals, s, detector, limit))
        weeks += end
    return 1000 * false / weeks


def matched_threshold(units: list[SimUnit], scales: np.ndarray, detector: str, rate: float) -> float:
    """The threshold giving ``rate`` false alarms per 1,000 unit-weeks on ``units`` (bisection, 14 halvings)."""
    lo, hi = 0.5, 40.0
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if false_alarm_rate(units, scales, detector, mid) > rate else (lo, mid)
    return hi


def evaluate(units: list[SimUnit], scales: np.ndarray, limits: dict[str, float]) -> dict[str, dict]:
    """Per detector (threshold ``limits[det]``): false alarms per 1,000 in-control unit-weeks and, per drift kind,
    the detection delays."""
    report = {}
    for det in DETECTORS:
        false, weeks_ok = 0, 0
        delays: dict[int, list[int]] = {k: [] for k in range(len(KINDS))}
        at_alarm: dict[int, list[float]] = {k: [] for k in range(len(KINDS))}
        missed = dict.fromkeys(range(len(KINDS)), 0)
        for u, scale in zip(units, scales):
            alarms = _alarms(u.residuals, scale, det, limits[det])
            end = WEEKS if u.onset is None else u.onset
            false += sum(a < end for a in alarms)
            weeks_ok += end
            if u.onset is None:
                continue
            # after a false alarm the unit was recalibrated: detection is the first alarm at or after the onset
            later = [a for a in alarms if a >= u.onset]
            if later:
                delays[u.kind].append(later[0] - u.onset)
                at_alarm[u.kind].append(abs(float(u.shift_kpa[later[0]])))
            else:
                missed[u.kind] += 1
        kinds = {}
        for k, (name, _, _) in enumerate(KINDS):
            d = np.array(delays[k])
            n = len(d) + missed[k]
            kinds[name] = {"units": n, "detected": len(d) / n if n else None,
                           "delay_median_weeks": float(np.median(d)) if len(d) else None,
                           "delay_p90_weeks": float(np.percentile(d, 90)) if len(d) else None,
                           "shift_at_alarm_kpa_median": float(np.median(at_alarm[k])) if len(d) else None}
        report[det] = {"threshold": limits[det], "false_alarms_per_1000_unit_weeks": 1000 * false / weeks_ok,
                       "false_alarms": false, "in_control_unit_weeks": weeks_ok, "kinds": kinds}
    return report


def _table(report: dict[str, dict]) -> str:
    head = f"{'detector':<13} {'threshold':>9} {'FA/1000 wk':>10}"
    lines = [head + "".join(f" | {name:<30}" for name, _, _ in KINDS),
             " " * len(head) + " | delay median/p90, detected, shift" * len(KINDS)]
    for det, r in report.items():
        cells = []
        for name, _, _ in KINDS:
            k = r["kinds"][name]
            cells.append(f"{k['delay_median_weeks']:>3.0f}/{k['delay_p90_weeks']:>3.0f} wk "
                         f"{100 * k['detected']:5.1f} % {k['shift_at_alarm_kpa_median']:.3f} kPa"
                         if k["detected"] else "-")
        lines.append(f"{det:<13} {r['threshold']:>9.3g} {r['false_alarms_per_1000_unit_weeks']:>10.2f}"
                     + "".join(f" | {c:<30}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="400 units")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=2.0, help="false alarms per 1,000 unit-weeks to match")
    args = ap.parse_args()
    n = 400 if args.quick else args.units
    t0 = time.perf_counter()
    units = _simulate(n, args.seed)
    warm = [u.residuals for u in units]
    scales = unit_scales(warm, warmup=WARMUP)
    stable = np.array([u.residuals for u in units if u.onset is None])
    nominal = evaluate(units, scales, DEFAULTS)
    # thresholds matched to the same false-alarm rate on an independent fleet (no peeking at the test fleet)
    tune = _simulate(n, args.seed + 1)
    tune_scales = unit_scales([u.residuals for u in tune], warmup=WARMUP)
    matched = {det: matched_threshold(tune, tune_scales, det, args.rate) for det in DETECTORS}
    at_rate = evaluate(units, scales, matched)
    result = {"scenario": "drift", "units": n, "weeks": WEEKS, "warmup_checks": WARMUP, "seed": args.seed,
              "fleet_scale_kpa": pooled_scale(warm, WARMUP),
              "unit_scale_kpa_p10_p50_p90": np.percentile(scales, [10, 50, 90]).tolist(),
              "stable_within_unit_std_kpa_p10_p50_p90": np.percentile(stable.std(1), [10, 50, 90]).tolist(),
              "stable_unit_mean_std_kpa": float(stable.mean(1).std()),
              "kinds": [{"name": k, "ramp_mv_per_week": r, "step_mv": s} for k, r, s in KINDS],
              "nominal": nominal, "matched_rate_per_1000": args.rate, "matched": at_rate,
              "seconds": time.perf_counter() - t0}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "drift.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n} units x {WEEKS} weekly checks; fleet residual scale {result['fleet_scale_kpa']:.3f} kPa, unit scales "
          "p10/p50/p90 " + "/".join(f"{v:.3f}" for v in result["unit_scale_kpa_p10_p50_p90"]) + " kPa")
    print("\nstated default thresholds:")
    print(_table(nominal))
    print(f"\nthresholds matched to {args.rate:g} false alarms per 1,000 unit-weeks on an independent fleet:")
    print(_table(at_rate))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
