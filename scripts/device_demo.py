"""Calibrate one new simulated sensor unit on the "device": the last step of the README's main job.

The server side (torch, metaedge.sdk) only simulates the unit and writes its reference points and test
readings as CSV; the calibration itself goes through the bundle and the torch-free runtime, exactly as on a
device (``metaedge adapt`` / ``metaedge predict`` do the same from the command line). Prints the unit's error
next to classic calibration from the same reference points and writes a plot.

    python scripts/device_demo.py BUNDLE --family sensor-pressure [--shots 3] [--seed 7] [--out reports/device]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metaedge.runtime.model import Model
from metaedge.runtime.tables import read_columns, write_columns
from metaedge.sdk.evaluate.classic import classic_predictions
from metaedge.sdk.tasks import make_family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--family", default="sensor-pressure")
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("reports/device"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # server side: a new unit off the production line, its reference points and 200 test readings
    fam = make_family(args.family)
    unit = fam.sample_task(np.random.default_rng([args.seed, 4242]), args.shots, 200, split="test")
    columns_in, columns_out = list(fam.input_names), list(fam.output_names)
    write_columns(args.out / "support.csv", columns_in + columns_out, np.hstack([unit.x_support, unit.y_support]))
    write_columns(args.out / "readings.csv", columns_in, unit.x_query)

    # device side: bundle + runtime only
    model = Model.load(args.bundle)
    support = read_columns(args.out / "support.csv", columns_in + columns_out)
    adapted = model.adapt(support[:, : len(columns_in)], support[:, len(columns_in):])
    adapted.save(args.out / "state.npz")
    pred = adapted.predict(read_columns(args.out / "readings.csv", columns_in))

    def rmse(p: np.ndarray) -> float:
        return float(np.sqrt(((p - unit.y_query) ** 2).mean()))

    unit_name = fam.output_units[0]
    print(f"new {args.family} unit calibrated from {args.shots} reference points by the {model.backend} backend "
          f"({adapted.steps_kept}/{adapted.steps_run} adaptation steps kept); RMSE over 200 readings [{unit_name}]:")
    print(f"  metaedge runtime (meta-learned)      {rmse(pred):10.4f}")
    classic = classic_predictions(unit.x_support[None], unit.y_support[None], unit.x_query[None], fam.primary_input)
    for name, p in classic.items():
        print(f"  classic {name:28s} {rmse(p[0]):10.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i = fam.primary_input
    order = np.argsort(unit.x_query[:, i])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(unit.x_query[order, i], unit.y_query[order, 0], ".", color="grey", ms=3, label="truth")
    ax.plot(unit.x_query[order, i], pred[order, 0], ".", ms=3, label=f"meta-learned ({rmse(pred):.3g})")
    best = min(classic, key=lambda k: rmse(classic[k][0]))
    ax.plot(unit.x_query[order, i], classic[best][0][order, 0], ".", ms=3,
            label=f"classic {best} ({rmse(classic[best][0]):.3g})")
    ax.plot(unit.x_support[:, i], unit.y_support[:, 0], "o", mfc="none", ms=10, mew=2, color="C3", label="reference")
    ax.set_xlabel(f"{fam.input_names[i]} [{fam.input_units[i]}]")
    ax.set_ylabel(f"{fam.output_names[0]} [{unit_name}]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "unit.png", dpi=120)
    print(f"plot written to {args.out / 'unit.png'}")


if __name__ == "__main__":
    main()
