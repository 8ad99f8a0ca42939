"""Report directories: ``report.json``, ``report.md`` and PNG plots of an evaluation.

Plots: the headline metric against inner steps (adaptation curves) and against shots, and for
regression families the calibration curves of a few held-out units with their reference points, and the
point-selection curve when the report has one (``metaedge eval --selection``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_write, atomic_write_text
from ..tasks import TaskFamily
from .evaluator import format_table


def write_report(report: dict[str, Any], out: Path, family: TaskFamily | None = None) -> list[Path]:
    """Write the report and its plots into ``out`` (created); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    plots = [_plot_steps(report, out / "steps.png"), _plot_shots(report, out / "shots.png")]
    if report["task_kind"] == "regression" and report.get("examples"):
        plots.append(_plot_calibration(report, out / "calibration.png", family))
    if report.get("selection"):
        plots.append(_plot_selection(report, out / "selection.png"))
    written += [p for p in plots if p is not None]
    atomic_write_text(out / "report.md", _markdown(report, [p.name for p in plots if p is not None]))
    return written


def _label(report: dict[str, Any]) -> tuple[str, float]:
    metric = report["metric"]
    if metric == "accuracy":
        return "accuracy [%]", 100.0
    unit = report["units"][0] if report["units"] and report["units"][0] else ""
    return f"{metric.upper()}" + (f" [{unit}{'^2' if metric == 'mse' else ''}]" if unit else ""), 1.0


def _setting(r: dict[str, Any]) -> str:
    return (f"{r['ways']}-way " if r["ways"] else "") + f"{r['shots']}-shot"


Series = dict[str, list[tuple[int, float, float]]]


def _plot_series(report: dict[str, Any], series: Series, xlabel: str, title: str, path: Path,
                 hlines: list[tuple[float, str]] = ()) -> Path | None:
    """Error-bar lines ``{name: [(x, mean, ci)]}`` (names with one point are dropped); None if nothing is left."""
    import matplotlib.pyplot as plt

    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in series.items():
        x, mean, ci = (np.array(c) for c in zip(*pts))
        ax.errorbar(x, mean, yerr=ci, fmt="-o" if name.startswith("metaedge") else "--.", capsize=3, label=name)
    for y, text in hlines:
        ax.axhline(y, color="grey", lw=0.8, ls=":")
        ax.annotate(text, (0, y), fontsize=7, color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_label(report)[0])
    if report["metric"] != "accuracy":
        ax.set_yscale("log")
    ax.set_title(f"{report['family']} / {report['algo']}: {title}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


def _point(report: dict[str, Any], r: dict[str, Any], x: int) -> tuple[int, float, float]:
    scale = _label(report)[1]
    return x, r[report["metric"]] * scale, r[report["metric"] + "_ci"] * scale


def _plot_steps(report: dict[str, Any], path: Path) -> Path | None:
    """Metric vs inner steps for every method evaluated at more than one step count."""
    curves: Series = {}
    for r in report["rows"]:
        if r["steps"] is not None:
            curves.setdefault(f"{r['method']} ({_setting(r)})", []).append(_point(report, r, r["steps"]))
    hlines = [(r[report["metric"]], f"best classic polynomial, {r['shots']} pts")
              for r in report.get("best_classic", []) if report["metric"] in r]
    return _plot_series(report, curves, "inner steps", "adaptation curves", path, hlines)


def _plot_shots(report: dict[str, Any], path: Path) -> Path | None:
    """Metric vs shots per method (at each method's most-adapted step count)."""
    best: dict[tuple[str, Any, int], dict[str, Any]] = {}
    for r in report["rows"]:
        key = (r["method"], r["ways"], r["shots"])
        if r["shots"] and (key not in best or (r["steps"] or 0) > (best[key]["steps"] or 0)):
            best[key] = r
    series: Series = {}
    for (method, ways, shots), r in best.items():
        series.setdefault(method + (f" ({ways}-way)" if ways else ""), []).append(_point(report, r, shots))
    return _plot_series(report, series, "shots (support samples per class / reference points)",
                        f"{_label(report)[0]} vs shots", path)


def _plot_selection(report: dict[str, Any], path: Path) -> Path | None:
    """The point-selection curve: error against the number of reference points per selection method."""
    curve = report["selection"]
    series: Series = {f"metaedge {m}" if m.startswith("guided") else m:
                      list(zip(curve["points"], curve["mean"][m], curve["ci"][m])) for m in curve["mean"]}
    return _plot_series(report, series, "reference points", "point selection", path)


def _plot_calibration(report: dict[str, Any], path: Path, family: TaskFamily | None) -> Path:
    """Held-out units: truth and adapted prediction against the primary input, reference points marked."""
    import matplotlib.pyplot as plt

    examples = report["examples"]
    primary = family.primary_input if family is not None else 0
    fig, axes = plt.subplots(1, len(examples), figsize=(3.6 * len(examples), 3.4), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        xq, yq, pred = np.array(ex["x_query"]), np.array(ex["y_query"]), np.array(ex["prediction"])
        order = np.argsort(xq[:, primary])
        ax.plot(xq[order, primary], yq[order, 0], ".", ms=3, color="grey", label="truth (query)")
        ax.plot(xq[order, primary], pred[order, 0], "-" if xq.shape[1] == 1 else ".", ms=3, label="adapted model")
        xs, ys = np.array(ex["x_support"]), np.array(ex["y_support"])
        ax.plot(xs[:, primary], ys[:, 0], "o", mfc="none", ms=9, mew=2, color="C3", label="reference points")
        if family is not None:
            ax.set_xlabel(f"{family.input_names[primary]} [{family.input_units[primary]}]")
            ax.set_ylabel(f"{family.output_names[0]} [{family.output_units[0]}]")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{report['family']}: held-out units adapted from {len(examples[0]['x_support'])} points")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


def _markdown(report: dict[str, Any], plots: list[str]) -> str:
    lines = [f"# Evaluation of `{report['run']}`", "",
             f"Family `{report['family']}`, learner `{report['algo']}`, split `{report['split']}`, "
             f"{report['settings']['tasks']} held-out tasks per setting; mean ± 95% CI over tasks.", "",
             "```", format_table(report), "```", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
