"""Sensor calibration: meta-learned 3-point adaptation vs classic calibration, per built-in sensor family.

For each family (``configs/sensor-<name>.json``) it meta-trains (or resumes) a run, then draws 500 new
simulated units (held-out seed). Each unit gets reference points at random true values over its range;
errors are RMSE over 100 query points spread over the unit's full range, in physical units, mean ± 95% CI
over units. Compared, on the same units:

- meta-learned adaptation from 3 points (after the run's own number of inner steps, fixed in advance);
- classic calibration from the same 3 points: 2-point linear, least-squares line / quadratic;
- classic calibration from 10 points: least-squares polynomials of degree 1..5 (best degree picked in
  hindsight on these very units, which flatters the baseline) and multilinear in all inputs.

    python benchmarks/sensor_calibration.py [--families ntc,loadcell,pressure] [--units 500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import train_or_resume, write_result

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import EvalSettings, evaluate, format_table
from metaedge.sdk.run import Run

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def headline(report: dict, steps: int) -> dict:
    """The rows the goal is judged on: generic classic calibration (2-point linear, least-squares polynomial,
    multilinear) as the issue defines it, and separately the family's physics-based calibration if any."""
    rows = report["rows"]

    def pick(pred) -> dict | None:
        cands = [r for r in rows if pred(r)]
        return min(cands, key=lambda r: r["rmse"]) if cands else None

    generic = ("classic 2-point linear", "classic LS polynomial", "classic LS multilinear")
    return {
        "meta_3pt": pick(lambda r: r["method"].startswith("metaedge") and r["steps"] == steps),
        "classic_3pt": pick(lambda r: r["method"].startswith(generic) and r["shots"] == 3),
        "classic_poly_10pt": pick(lambda r: r["method"].startswith("classic LS polynomial") and r["shots"] == 10),
        "classic_10pt": pick(lambda r: r["method"].startswith(generic) and r["shots"] == 10),
        "physics_3pt": pick(lambda r: r["method"].startswith("classic") and not r["method"].startswith(generic)
                            and r["shots"] == 3),
        "physics_10pt": pick(lambda r: r["method"].startswith("classic") and not r["method"].startswith(generic)
                             and r["shots"] == 10),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="ntc,loadcell,pressure")
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-sensors"))
    parser.add_argument("--iterations", type=int, default=None, help="override the configs' iterations")
    args = parser.parse_args()
    results = {}
    for name in args.families.split(","):
        data = json.loads((CONFIGS / f"sensor-{name}.json").read_text())
        if args.iterations:
            data["iterations"] = args.iterations
        cfg = TrainConfig.from_dict(data)
        path, wall = train_or_resume(cfg, args.runs / name)
        steps = cfg.inner_steps
        report = evaluate(
            Run.load(path),
            EvalSettings(tasks=args.units, shots=3, steps=sorted({0, 1, steps, 10}), baseline_shots=[10]),
        )
        print(format_table(report))
        results[name] = {"train_wall_seconds": wall, "iterations": cfg.iterations, "headline": headline(report, steps),
                         "report": report}
    print(f"\nRMSE over each unit's full range, mean ± 95% CI over {args.units} new units")
    print(f"{'family':9s} {'unit':5s} {'meta 3 pts':>17s} {'classic 3 pts':>17s} {'poly 10 pts':>17s} "
          f"{'classic 10 pts':>17s}  goal (meta 3 pts < classic 3 pts and < poly 10 pts)")
    for name, r in results.items():
        h = r["headline"]
        unit = r["report"]["units"][0]
        cells = [h["meta_3pt"], h["classic_3pt"], h["classic_poly_10pt"], h["classic_10pt"]]
        text = " ".join(f"{c['rmse']:8.4f} ± {c['rmse_ci']:.4f}" for c in cells)
        met = cells[0]["rmse"] < cells[1]["rmse"] and cells[0]["rmse"] < cells[2]["rmse"]
        print(f"{name:9s} {unit:5s} {text}  {'met' if met else 'NOT met'}")
        print(f"{'':15s} classic 3 pts = {h['classic_3pt']['method']}; 10 pts = {h['classic_10pt']['method']}")
        for key in ("classic_3pt", "classic_poly_10pt", "classic_10pt"):
            m, k = h[key]["method"], h[key]["shots"]
            p = next(x for x in r["report"]["paired"] if x["method"] == m and x["shots"] == k and x["steps"] is None)
            print(f"{'':15s} paired, meta minus {p['method']} ({p['shots']} pts): "
                  f"{p['difference']:+.4f} ± {p['difference_ci']:.4f}")
        for key in ("physics_3pt", "physics_10pt"):
            if h[key]:
                print(f"{'':15s} physics baseline {h[key]['method']} ({h[key]['shots']} pts): "
                      f"{h[key]['rmse']:.4f} ± {h[key]['rmse_ci']:.4f}")
    print(f"written to {write_result('sensor_calibration', {'units': args.units, 'results': results})}")


if __name__ == "__main__":
    main()
