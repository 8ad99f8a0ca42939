"""Try every malformed input the device side can meet and print what each one gets (a Markdown table).

Builds a small real bundle (a few meta-training iterations on simulated pressure sensors), then breaks it and
its inputs one way at a time and runs the device-side command line (``metaedge adapt`` / ``predict``) on each,
recording the exit status and the one-line message. Wrong input shapes are also tried through the Python API
(``Model.adapt``), which is where a program on the device would pass arrays.

    .venv/bin/python scripts/bad_inputs.py [--out docs/bad-inputs.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from metaedge.export.bundle import export_bundle
from metaedge.runtime.bundle import Bundle
from metaedge.runtime.model import Model
from metaedge.sdk.train import TrainConfig, train

CLI = [sys.executable, "-m", "metaedge.cli"]


def _cli(*args: str | Path) -> tuple[int, str]:
    """Exit status and the last line of stderr (or stdout) of one command."""
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
    text = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return proc.returncode, text[-1] if text else ""


def _api(fn) -> tuple[str, str]:
    try:
        fn()
    except Exception as e:  # the table shows whatever the runtime raised
        return type(e).__name__, str(e)
    return "accepted", ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="metaedge-bad-"))
    try:
        rows = _cases(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = ["| case | how it was tried | exit status / exception | message |", "| --- | --- | --- | --- |"]
    table += [f"| {case} | {how} | {status} | {message.replace(str(root), 'TMP').replace('|', '/')} |"
              for case, how, status, message in rows]
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.write_text("# Malformed inputs and what they get\n\nMade by `python scripts/bad_inputs.py "
                            f"--out {args.out}`; TMP is a temporary directory.\n\n" + text)


def _cases(root: Path) -> list[tuple[str, str, str, str]]:
    run = train(TrainConfig(family="sensor-pressure", algo="metasgd", shots=3, queries=5, meta_batch=4, iterations=20,
                            hidden=[16, 16], activation="tanh", inner_steps=2), root / "run", progress=False)
    good = export_bundle(run, root / "good.meb")
    zipped = export_bundle(run, root / "good.meb.zip")
    support = root / "support.csv"
    support.write_text("bridge_output,temperature,pressure\n40,25,30\n55,25,55\n70,25,80\n")
    rows: list[tuple[str, str, str, str]] = []

    def adapt_case(case: str, bundle: Path, csv: Path = support) -> None:
        code, message = _cli("adapt", bundle, "--support", csv, "--out", root / "state.npz")
        rows.append((case, "`metaedge adapt`", f"exit {code}", message))

    def broken(name: str, edit) -> Path:
        path = root / name
        shutil.copytree(good, path)
        edit(path)
        return path

    truncated = root / "truncated.zip"
    truncated.write_bytes(zipped.read_bytes()[:300])
    adapt_case("corrupt zip (truncated)", truncated)
    evil = root / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escaped.txt", "x")
    adapt_case("zip entry escaping the bundle (`../../escaped.txt`)", evil)
    adapt_case("wrong hash (one byte of theta0.npy changed)", broken(
        "tampered", lambda p: (p / "theta0.npy").write_bytes((p / "theta0.npy").read_bytes()[:-1] + b"\x01")))
    adapt_case("missing file (forward.onnx deleted)", broken("missing", lambda p: (p / "forward.onnx").unlink()))

    def newer(p: Path) -> None:
        manifest = Bundle.open(p).manifest
        (p / "manifest.json").write_text(dataclasses.replace(manifest, format_version=99).to_json())

    adapt_case("manifest of a newer format version (99)", broken("newer", newer))
    adapt_case("manifest that is not JSON", broken("garbled", lambda p: (p / "manifest.json").write_text("{oops")))
    adapt_case("bundle path that does not exist", root / "nowhere.meb")
    header = "bridge_output,temperature,pressure\n"
    for case, name, text in [
        ("NaN in the support data", "nan.csv", header + "40,25,30\nnan,25,55\n70,25,80\n"),
        ("wrong feature count (support CSV without the temperature column)", "two-columns.csv",
         "bridge_output,pressure\n40,30\n55,55\n"),
        ("empty support (header only)", "empty.csv", header),
        ("non-numeric value in the support CSV", "text.csv", header + "40,warm,30\n"),
    ]:
        (root / name).write_text(text)
        adapt_case(case, good, root / name)

    model = Model.load(good)
    xs, ys = np.array([[40, 25], [55, 25], [70, 25]], np.float32), np.array([[30], [55], [80]], np.float32)
    for case, fn in [
        ("wrong feature count (array of 3 features)", lambda: model.adapt(np.ones((3, 3), np.float32), ys)),
        ("targets for the wrong number of samples", lambda: model.adapt(xs, ys[:2])),
        ("empty support array", lambda: model.adapt(np.zeros((0, 2), np.float32), np.zeros((0, 1), np.float32))),
        ("infinite target", lambda: model.adapt(xs, np.array([[30], [np.inf], [80]], np.float32))),
        ("negative step count", lambda: model.adapt(xs, ys, steps=-1)),
    ]:
        rows.append((case, "`Model.adapt`", *_api(fn)))

    other = export_bundle(train(TrainConfig(family="sensor-pressure", algo="maml", shots=3, queries=5, meta_batch=4,
                                            iterations=5, hidden=[16, 16], activation="tanh", seed=1),
                                root / "run2", progress=False), root / "other.meb")
    code, _ = _cli("adapt", good, "--support", support, "--out", root / "state.npz")
    readings = root / "readings.csv"
    readings.write_text("bridge_output,temperature\n50,25\n")
    code, message = _cli("predict", other, "--state", root / "state.npz", "--input", readings)
    rows.append(("adapted state from another bundle", "`metaedge predict`", f"exit {code}", message))
    (root / "junk.npz").write_bytes(b"not a state")
    code, message = _cli("predict", good, "--state", root / "junk.npz", "--input", readings)
    rows.append(("state file that is not an adapted state", "`metaedge predict`", f"exit {code}", message))
    return rows


if __name__ == "__main__":
    main()
