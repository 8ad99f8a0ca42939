"""The guided calibration session behind `metaedge calibrate` (device side: runtime only, no torch).

The loop: the bundle suggests the next reference point among the candidates the technician can set
(:meth:`Model.suggest`, given the points taken so far), a reading source gives the reference output there (the
technician at a prompt, or a replayed CSV), the model adapts from ``theta0`` on every point taken so far, and the
95% half-width of the predictive interval over the candidate set (the unit's operating range) is shown. The session
stops when the largest half-width is below the target or at the maximum number of points.

A candidate is suggested once: points already taken are not offered again (re-reading the same setting adds less
than a new one and wastes the operator's settling time). Without ``--target`` the session takes ``--max-points``
points, so they are planned as one design (``Model.suggest(..., budget=)``); with a target it may stop after any
point, so each suggestion is the best single point given those taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from .errors import InputError
from .runtime.model import Adapted, Model
from .runtime.tables import read_columns

#: the level of the interval whose half-width the session shows and compares with the target
LEVEL = 0.95

#: gives the reference output ``(out,)`` at candidate row ``index`` (0-based), input ``point`` ``(in,)``
Reader = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Step:
    """One reference point taken: its candidate row (0-based), input ``(in,)``, reading ``(out,)`` (physical
    units), and the 95% half-width over the candidates after adapting on every point so far (physical units:
    the largest and the mean over candidates and outputs)."""

    index: int
    point: np.ndarray
    reading: np.ndarray
    max_half_width: float
    mean_half_width: float


@dataclass(frozen=True)
class Session:
    """A finished session: the steps in order, the last adaptation (on every point), and whether the target
    was reached (False: stopped at the maximum number of points or when no candidate was left)."""

    steps: tuple[Step, ...]
    adapted: Adapted
    reached: bool


def check_model(model: Model) -> None:
    """Refuse, with one sentence, bundles a session cannot run on: classifiers and bundles without intervals."""
    if model.classification:
        raise InputError("calibrate picks reference points for regression bundles; this bundle classifies")
    if model.uncertainty is None:
        raise InputError(f"{model.bundle.path} holds no fitted predictive intervals, which calibrate needs to "
                         "know when to stop; re-export it with `metaedge export`")


def read_candidates(model: Model, path: str | Path) -> np.ndarray:
    """The candidate points ``(m, in)`` from a CSV with the bundle's input columns; one sentence when empty."""
    candidates = read_columns(path, model.bundle.manifest.input.names)
    if len(candidates) == 0:
        raise InputError(f"{path} holds no candidate points; give one row per setting the technician can apply")
    return candidates


def half_widths(adapted: Adapted, candidates: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Half-widths ``(m, out)`` of the ``level`` predictive interval at the candidates, physical units."""
    iv = adapted.predict(candidates, interval=level)
    return (iv.upper.astype(np.float64) - iv.lower.astype(np.float64)) / 2


def run_session(model: Model, candidates: np.ndarray, read: Reader, target: float | None = None,
                max_points: int = 8, on_step: Callable[[Step], None] | None = None,
                on_suggest: Callable[[int, np.ndarray], None] | None = None, planned: bool | None = None) -> Session:
    """Run the guided loop over ``candidates`` ``(m, in)``; ``read`` gives each reading, ``on_suggest`` and
    ``on_step`` report progress. ``target`` (physical units; None: none) stops the session once the largest
    95% half-width over the candidates is below it, else it stops at ``max_points`` or when every candidate is
    taken."""
    check_model(model)
    if max_points < 1:
        raise InputError(f"--max-points must be at least 1, got {max_points}")
    if target is not None and not (math.isfinite(target) and target > 0):
        raise InputError(f"--target must be a positive half-width in the output's units, got {target}")
    candidates = np.asarray(candidates, np.float32)
    out = model.bundle.manifest.output.dim
    # without a target every point up to max_points is taken, so they are planned as one design; with one the
    # session may stop at any point, so each pick must be the best on its own
    planned = target is None if planned is None else planned
    budget = min(max_points, len(candidates)) if planned else None
    taken: list[int] = []
    readings: list[np.ndarray] = []
    steps: list[Step] = []
    adapted = None
    while len(taken) < min(max_points, len(candidates)):
        support = candidates[taken] if taken else None
        index = model.suggest(candidates, support=support, budget=budget, exclude=taken).index
        if on_suggest is not None:
            on_suggest(index, candidates[index])
        reading = np.asarray(read(index, candidates[index]), np.float32).reshape(-1)
        if reading.size != out or not np.isfinite(reading).all():
            raise InputError(f"the reading at candidate {index + 1} must be {out} finite number(s), got "
                             f"{reading.tolist()}; measure the reference again")
        taken.append(index)
        readings.append(reading)
        adapted = model.adapt(candidates[taken], np.stack(readings))
        half = half_widths(adapted, candidates)
        step = Step(index, candidates[index].copy(), reading, float(half.max()), float(half.mean()))
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if target is not None and step.max_half_width < target:
            return Session(tuple(steps), adapted, True)
    return Session(tuple(steps), adapted, False)


def replay_reader(model: Model, path: str | Path) -> Reader:
    """Readings from a CSV with the bundle's input and output columns: the reading at a suggested candidate is
    that of the first row whose inputs equal the candidate's (to float32), so the file may list the candidates
    in any order, or be the candidates file with the output columns added."""
    m = model.bundle.manifest
    n_in = len(m.input.names)
    table = read_columns(path, [*m.input.names, *m.output.names])
    inputs, outputs = table[:, :n_in], table[:, n_in:]

    def read(index: int, point: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(np.isclose(inputs, point, rtol=1e-6, atol=0).all(axis=1))
        if len(rows) == 0:
            raise InputError(f"{path} has no reading at candidate {index + 1} ({_point_text(m.input.names, point)}"
                             f"); add a row with these inputs and its {', '.join(m.output.names)}")
        return outputs[rows[0]]

    return read


def prompt_reader(model: Model) -> Reader:
    """Readings typed by the technician at a prompt, one per output; a non-finite value is asked again."""
    m = model.bundle.manifest

    def ask(name: str, unit: str) -> float:
        while True:
            value = click.prompt(f"  reference {name} [{unit}]", type=float)
            if math.isfinite(value):
                return value
            click.echo(f"  {value} is not a reading; type the reference {name} as a finite number")

    def read(index: int, point: np.ndarray) -> np.ndarray:
        return np.array([ask(n, u) for n, u in zip(m.output.names, m.output.units)], np.float32)

    return read


def _point_text(names: Sequence[str], point: np.ndarray, units: Sequence[str] | None = None) -> str:
    units = units or [""] * len(names)
    return ", ".join(f"{n}={float(v):.6g}" + (f" {u}" if u else "") for n, v, u in zip(names, point, units))


def calibrate(model: Model, candidates_path: Path, out: Path, target: float | None, max_points: int,
              replay: Path | None = None, journal: Path | None = None, unit: str | None = None,
              echo: Callable[[str], None] = click.echo) -> Session:
    """The `metaedge calibrate` command: run a session (prompting, or replaying ``replay``), write the state of
    the last adaptation to ``out`` and, with ``journal``, append its record for ``unit``."""
    check_model(model)
    m = model.bundle.manifest
    candidates = read_candidates(model, candidates_path)
    read = prompt_reader(model) if replay is None else replay_reader(model, replay)
    unit_text = m.output.units[0] if len(set(m.output.units)) == 1 else "(output units)"
    echo(f"{len(candidates)} candidate points from {candidates_path}; "
         + (f"target: 95% half-width below {target:g} {unit_text}" if target is not None else "no target")
         + f", at most {max_points} points" + (f"; readings replayed from {replay}" if replay else ""))
    count = [0]

    def suggested(index: int, point: np.ndarray) -> None:
        count[0] += 1
        echo(f"point {count[0]}: set candidate {index + 1} ({_point_text(m.input.names, point, m.input.units)})")

    def shown(step: Step) -> None:
        if replay is not None:
            echo("  reading " + _point_text(m.output.names, step.reading, m.output.units))
        echo(f"  95% half-width over the {len(candidates)} candidates: max {step.max_half_width:.4g}, "
             f"mean {step.mean_half_width:.4g} {unit_text}")

    session = run_session(model, candidates, read, target, max_points, on_step=shown, on_suggest=suggested)
    session.adapted.save(out)
    if journal is not None:
        session.adapted.journal(journal, unit)
    last = session.steps[-1]
    why = (f"target reached after {len(session.steps)} points" if session.reached else
           f"stopped after {len(session.steps)} points with max half-width {last.max_half_width:.4g} {unit_text}"
           + (" above the target" if target is not None else ""))
    echo(f"{why}; state written to {out}" + (f"; journaled to {journal} (unit {unit})" if journal else ""))
    return session
