"""`metaedge calibrate`: the guided session replayed through click's runner and typed at a real terminal (tmux),
checked against the runtime's own suggest / adapt / predict on the same points."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metaedge.cli import main
from metaedge.runtime.model import Adapted, Model
from metaedge.sdk.tasks import make_family

HALF = re.compile(r"half-width over the \d+ candidates: max ([0-9.e+-]+), mean ([0-9.e+-]+)")


@pytest.fixture(scope="module")
def unit_files(tmp_path_factory):
    """One simulated unit's grid (6 pressures x 3 temperatures): the candidates CSV (its bridge outputs and
    temperatures), the readings CSV (with the true pressure, rows in reverse order) and the arrays."""
    family = make_family("sensor-pressure")
    info = family.draw_unit(np.random.default_rng(7))
    p, t = np.meshgrid(np.linspace(0, 100, 6), [-20.0, 25.0, 85.0])
    raw = family.raw_reading(info, p.ravel(), t.ravel()[:, None])
    x = np.column_stack([raw, t.ravel()]).astype(np.float32)
    y = p.ravel()[:, None].astype(np.float32)
    root = tmp_path_factory.mktemp("unit")
    _write(root / "candidates.csv", ["bridge_output", "temperature"], x)
    _write(root / "readings.csv", ["bridge_output", "temperature", "pressure"], np.column_stack([x, y])[::-1])
    return root / "candidates.csv", root / "readings.csv", x, y


def _write(path: Path, header: list[str], rows: np.ndarray) -> None:
    # repr of a float32 round-trips, so the replay matches the candidates exactly
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")


def _replay(bundle, files, out, *extra):
    candidates, readings = files[0], files[1]
    return CliRunner().invoke(main, ["calibrate", str(bundle), "--candidates", str(candidates), "--from",
                                     str(readings), "--out", str(out), *extra])


def _taken(output: str) -> list[int]:
    return [int(i) - 1 for i in re.findall(r"set candidate (\d+) ", output)]


def test_replay_follows_the_runtime_suggestions_and_saves_the_last_adaptation(ridge_bundle, unit_files, tmp_path):
    result = _replay(ridge_bundle, unit_files, tmp_path / "s.state", "--max-points", "5")
    assert result.exit_code == 0, result.output
    x, y = unit_files[2], unit_files[3]
    taken = _taken(result.output)
    assert len(taken) == 5 and len(set(taken)) == 5
    model = Model.load(ridge_bundle)
    # without a target the 5 points are planned as one design: each suggestion is the runtime's next point of the
    # 5-point plan given the points before it, and the first plan is the design the session follows
    first = model.suggest(x, budget=5)
    assert taken[0] == first.index and set(taken) == set(first.plan)
    for n in range(1, 5):
        assert taken[n] == model.suggest(x, support=x[taken[:n]], budget=5, exclude=taken[:n]).index
    # the readings replayed are the unit's, matched by inputs although the readings file is in reverse order
    for i, shown in zip(taken, re.findall(r"reading pressure=([0-9.e+-]+) kPa", result.output)):
        assert float(shown) == pytest.approx(float(y[i, 0]), rel=1e-5)
    # the state is the adaptation from theta0 on all five points, and the shown widths are its intervals
    reference = model.adapt(x[taken], y[taken])
    state = Adapted.load(model, tmp_path / "s.state", support=(x[taken], y[taken]))
    np.testing.assert_allclose(state.theta, reference.theta, rtol=1e-6, atol=1e-7)
    iv = state.predict(x, interval=0.95)
    half = (iv.upper.astype(np.float64) - iv.lower) / 2
    max_shown, mean_shown = map(float, HALF.findall(result.output)[-1])
    assert max_shown == pytest.approx(half.max(), rel=1e-3) and mean_shown == pytest.approx(half.mean(), rel=1e-3)
    widths = [float(m) for m, _ in HALF.findall(result.output)]
    assert widths[-1] < widths[0]  # more reference points, a narrower posterior
    assert "stopped after 5 points" in result.output


def test_target_stops_at_the_first_point_below_it_and_journals(ridge_bundle, unit_files, tmp_path):
    # a target never reached: the same sequential picks, all six points
    full = _replay(ridge_bundle, unit_files, tmp_path / "a.state", "--max-points", "6", "--target", "1e-9")
    model = Model.load(ridge_bundle)
    x = unit_files[2]
    taken = _taken(full.output)
    for n in range(6):  # each the best untaken candidate alone, given the points before it
        scores = model.suggest(x, support=x[taken[:n]] if n else None).scores.copy()
        scores[taken[:n]] = -np.inf
        assert taken[n] == int(np.argmax(scores))
    widths = [float(m) for m, _ in HALF.findall(full.output)]
    first = next(n for n in range(1, 6) if widths[n] < min(widths[:n]))  # the first point that narrows below all
    target = (widths[first] + min(widths[:first])) / 2
    journal = tmp_path / "j.jsonl"
    result = _replay(ridge_bundle, unit_files, tmp_path / "b.state", "--max-points", "6", "--target", str(target),
                     "--journal", str(journal), "--unit", "SN-1")
    assert result.exit_code == 0, result.output
    assert _taken(result.output) == _taken(full.output)[:first + 1]
    assert f"target reached after {first + 1} points" in result.output
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(records) == 1 and records[0]["unit"] == "SN-1" and len(records[0]["support_x"]) == first + 1


def test_refusals_are_one_sentence(ridge_bundle, unit_files, tmp_path):
    candidates, readings, x, y = unit_files
    bad = tmp_path / "nan.csv"
    _write(bad, ["bridge_output", "temperature", "pressure"], np.column_stack([x, np.full_like(y, np.nan)]))
    result = _replay(ridge_bundle, (candidates, bad), tmp_path / "s.state")
    assert result.exit_code == 1 and "must be 1 finite number(s)" in result.output
    assert not (tmp_path / "s.state").exists()  # nothing half-written
    partial = tmp_path / "partial.csv"
    _write(partial, ["bridge_output", "temperature", "pressure"], np.column_stack([x, y])[:1])
    result = _replay(ridge_bundle, (candidates, partial), tmp_path / "s.state")
    assert result.exit_code == 1 and "has no reading at candidate" in result.output
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("bridge,temperature\n1,2\n")
    result = _replay(ridge_bundle, (wrong, readings), tmp_path / "s.state")
    assert result.exit_code == 1 and "lacks column(s) bridge_output" in result.output
    old = tmp_path / "old.meb"
    shutil.copytree(ridge_bundle, old)
    raw = json.loads((old / "manifest.json").read_text())
    del raw["uncertainty"]
    (old / "manifest.json").write_text(json.dumps(raw))
    result = _replay(old, unit_files, tmp_path / "s.state")
    assert result.exit_code == 1 and "holds no fitted predictive intervals" in result.output
    result = _replay(ridge_bundle, unit_files, tmp_path / "s.state", "--journal", str(tmp_path / "j.jsonl"))
    assert result.exit_code == 2 and "--journal needs --unit ID" in result.output
    result = _replay(ridge_bundle, unit_files, tmp_path / "s.state", "--journal", str(tmp_path / "j.jsonl"),
                     "--unit", "x" * 513)
    assert result.exit_code == 1 and "journaling needs the unit's id, 1 to 512 characters" in result.output
    assert not (tmp_path / "j.jsonl").exists() and not (tmp_path / "s.state").exists()
    assert "Traceback" not in result.output


def _wait_for(session: str, text: str, count: int = 1, timeout: float = 60.0) -> str:
    """The pane's text once ``text`` appears ``count`` times in it (or the test fails with the pane shown)."""
    end = time.monotonic() + timeout
    while True:
        pane = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-200", "-t", session],
                              capture_output=True, text=True, check=True).stdout
        if pane.count(text) >= count:
            return pane
        if time.monotonic() > end:
            pytest.fail(f"no {text!r} x{count} on the terminal after {timeout} s:\n{pane}")
        time.sleep(0.2)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed, so no real terminal to type at")
def test_technician_answers_two_prompts_at_a_real_terminal(ridge_bundle, unit_files, tmp_path):
    candidates, _, x, y = unit_files
    state = tmp_path / "unit.state"
    metaedge = Path(sys.executable).with_name("metaedge")
    command = " ".join(shlex.quote(str(a)) for a in [metaedge, "calibrate", ridge_bundle, "--candidates",
                                                     candidates, "--max-points", "2", "--out", state])
    session = f"metaedge-calibrate-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                    f"{command}; echo EXIT=$?; sleep 30"], check=True)
    def send(text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, text, "Enter"], check=True)

    try:
        _wait_for(session, "reference pressure [kPa]:")
        send("nan")  # a slip of the finger is asked again, not taken
        _wait_for(session, "nan is not a reading")
        typed = []
        for prompts in (2, 3):
            pane = _wait_for(session, "reference pressure [kPa]:", prompts)
            typed.append(_taken(pane)[-1])
            send(repr(float(y[typed[-1], 0])))
        pane = _wait_for(session, "EXIT=")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert "EXIT=0" in pane and "stopped after 2 points" in pane, pane
    model = Model.load(ridge_bundle)
    assert typed[0] == model.suggest(x, budget=2).index  # two points, no target: planned together
    reference = model.adapt(x[typed], y[typed])
    np.testing.assert_allclose(Adapted.load(model, state).theta, reference.theta, rtol=1e-6, atol=1e-7)
