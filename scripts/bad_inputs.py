"""Try every malformed input the device side can meet and print what each one gets (a Markdown table).

Builds a small real bundle (a few meta-training iterations on simulated pressure sensors), then breaks it and
its inputs one way at a time and runs the device-side command line (``metaedge adapt`` / ``predict`` / ``check``,
with journals) on each,
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
from zip_bomb_check import make_bomb, make_link  # scripts/ is on sys.path when this script runs

from metaedge.export.bundle import export_bundle
from metaedge.runtime.bundle import Bundle
from metaedge.runtime.model import Model
from metaedge.runtime.signing import generate_key, sign_bundle
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.train import train

CLI = [sys.executable, "-m", "metaedge.cli"]


def _cli(*args: str | Path) -> tuple[int, str]:
    """Exit status and the last line of stdout (on success) or stderr (on failure) of one command."""
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)
    text = (proc.stdout.strip() if proc.returncode == 0 else proc.stderr.strip() or proc.stdout.strip()).splitlines()
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
    adapt_case("zip bomb (64 MiB of zeros in 64 KiB next to the bundle)", make_bomb(good, root / "bomb.zip", 64))
    adapt_case("zip entry that is a symbolic link (theta0.npy -> /etc/passwd)", make_link(good, root / "link.zip"))

    def linked(p: Path) -> None:
        (p / "rates.npy").rename(root / "rates.npy")
        (p / "rates.npy").symlink_to(root / "rates.npy")

    adapt_case("directory bundle with a listed file as a symbolic link", broken("linked", linked))
    vendor, other_key = root / "vendor.key", root / "other.key"
    generate_key(vendor)
    generate_key(other_key)
    trust = ["--trust", str(vendor) + ".pub"]

    def signed_case(case: str, edit) -> None:
        bundle = broken(f"signed-{len(rows)}", lambda p: sign_bundle(p, vendor))
        edit(bundle)
        code, message = _cli("adapt", bundle, "--support", support, "--out", root / "state.npz", *trust)
        rows.append((case, "`metaedge adapt --trust vendor.key.pub`", f"exit {code}", message))

    def edit_manifest(p: Path) -> None:  # a valid manifest, rewritten after signing: y_mean moved to 0
        m = Bundle.open(p, trust=()).manifest
        edited = dataclasses.replace(m, normalization=dataclasses.replace(m.normalization, y_mean=(0.0,)))
        (p / "manifest.json").write_text(edited.to_json())

    signed_case("signed by the trusted key", lambda p: None)
    signed_case("unsigned, a key trusted", lambda p: (p / "manifest.sig").unlink())
    signed_case("signed by another key", lambda p: sign_bundle(p, other_key))
    signed_case("signed, then the manifest edited", edit_manifest)
    signed_case("signed, then a listed file edited (rates.npy)",
                lambda p: (p / "rates.npy").write_bytes((p / "rates.npy").read_bytes()[:-1] + b"\x01"))
    header = "bridge_output,temperature,pressure\n"
    for case, name, text in [
        ("NaN in the support data", "nan.csv", header + "40,25,30\nnan,25,55\n70,25,80\n"),
        ("wrong feature count (support CSV without the temperature column)", "two-columns.csv",
         "bridge_output,pressure\n40,30\n55,55\n"),
        ("empty support (header only)", "empty.csv", header),
        ("non-numeric value in the support CSV", "text.csv", header + "40,warm,30\n"),
        ("support CSV that is not UTF-8 (Latin-1 degree sign)", "latin1.csv", (header + "40,25\xb0,30\n").encode(
            "latin-1")),
    ]:
        (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
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
    rows += _journal_cases(root, good, support)
    return rows


def _journal_cases(root: Path, good: Path, support: Path) -> list[tuple[str, str, str, str]]:
    """The journal (docs/journal.md): bad --journal / --unit / --reference arguments and damaged journals."""
    rows = []
    state = root / "journaled.state"

    def adapt(case: str, *extra: str | Path) -> None:
        code, message = _cli("adapt", good, "--support", support, "--out", state, *extra)
        rows.append((case, "`metaedge adapt --journal`", f"exit {code}", message))

    adapt("--journal without --unit", "--journal", root / "j.db")
    (root / "notes.db").write_text("not a journal\n")
    adapt("--journal naming a file that is no SQLite journal", "--journal", root / "notes.db", "--unit", "SN-1")
    (root / "folder.db").mkdir()
    adapt("--journal naming a folder", "--journal", root / "folder.db", "--unit", "SN-1")
    adapt("--unit longer than 512 characters", "--journal", root / "j.db", "--unit", "u" * 513)
    adapt("journaled adaptation (for the checks below)", "--journal", root / "j.db", "--unit", "SN-1")
    (root / "no-reference.csv").write_text("bridge_output,temperature\n50,25\n")
    code, message = _cli("check", good, "--state", state, "--reference", root / "no-reference.csv", "--journal",
                         root / "j.db", "--unit", "SN-1")
    rows.append(("check CSV without the output column", "`metaedge check`", f"exit {code}", message))
    from metaedge.runtime.journal import read_journal

    good_line = next(iter(read_journal(root / "j.db"))).to_json()
    for case, name, data in [
        ("journal line that is not JSON", "garbled.jsonl", good_line.encode() + b"\n{oops\n"),
        ("journal record without its unit", "no-unit.jsonl", good_line.replace('"unit":"SN-1",', "").encode() + b"\n"),
        ("journal of another schema", "newer.jsonl", good_line.replace("journal/1", "journal/9").encode() + b"\n"),
        ("SQLite file that is not a journal (no records table)", "other.db", _sqlite_without_records(root)),
    ]:
        (root / name).write_bytes(data)
        rows.append((case, "`read_journal`", *_api(lambda path=root / name: list(read_journal(path)))))
    return rows


def _sqlite_without_records(root: Path) -> bytes:
    import sqlite3

    db = sqlite3.connect(root / "plain.db")
    db.execute("CREATE TABLE t (a)")
    db.commit()
    db.close()
    return (root / "plain.db").read_bytes()


if __name__ == "__main__":
    main()
