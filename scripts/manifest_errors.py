"""Delete each manifest key in turn, then give each a wrong type, and record what ``metaedge adapt`` says.

Exports one small real bundle (simulated pressure sensors, Meta-SGD, ONNX graphs and the C library's model), then
for every key of its ``manifest.json`` (records field by field; for maps such as ``files`` or ``ops`` the first
entry; the first element of lists of records; not inside the opaque ``family`` and ``provenance.train``) writes a
copy with that key deleted, and another with its value replaced by one of a wrong JSON type, and runs
``metaedge adapt`` on each. A required key must give exit status 1 and one sentence naming the field by its dotted
path; deleting an optional key (one a format-1 bundle written before it existed lacks) must leave a bundle that
adapts (exit 0). Writes the table to ``docs/manifest-errors.md``.

    .venv/bin/python scripts/manifest_errors.py [--out docs/manifest-errors.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metaedge.runtime.bundle import Bundle

CLI = [sys.executable, "-m", "metaedge.cli"]
#: free-form parts the manifest carries without a schema of its own
OPAQUE = {"family", "provenance.train"}
#: objects keyed by file, graph or profile name: only their first entry is tried
MAPS = {"files", "ops", "devices", "tensorrt", "footprint.graphs", "precision", "engines", "outputs"}
SUPPORT = "bridge_output,temperature,pressure\n40,25,30\n55,25,55\n70,25,80\n"

Path_ = tuple[str | int, ...]


def dotted(path: Path_) -> str:
    """``("adaptation", "parameters", 0, "shape")`` -> ``adaptation.parameters[0].shape``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def key_paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every key to try, parents before children."""
    if not isinstance(value, dict):
        return
    items = list(value.items())
    if path and (dotted(path) in MAPS or path[-1] in MAPS or (len(path) >= 2 and path[-1] == "ops")):
        items = items[:1]
    for key, child in items:
        here = (*path, key)
        yield here
        if dotted(here) in OPAQUE:
            continue
        if isinstance(child, dict):
            yield from key_paths(child, here)
        elif isinstance(child, list) and child and isinstance(child[0], dict):
            yield from key_paths(child[0], (*here, 0))


def wrong_type(value: Any) -> Any:
    """A JSON value of another type than ``value``."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "many"
    if isinstance(value, (list, dict)):
        return {"not": "a list"} if isinstance(value, list) else ["not", "an object"]
    return 7  # strings and nulls


def edited(manifest: dict, path: Path_, change: str) -> dict:
    """A copy of ``manifest`` with the key at ``path`` deleted (``change == "deleted"``) or wrongly typed."""
    out = copy.deepcopy(manifest)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    if change == "deleted":
        del parent[path[-1]]
    else:
        parent[path[-1]] = wrong_type(parent[path[-1]])
    return out


def cases(manifest: dict) -> Iterator[tuple[str, str, dict]]:
    """``(field, change, edited manifest)`` for every key: deleted, then wrongly typed."""
    for path in key_paths(manifest):
        for change in ("deleted", "wrong type"):
            yield dotted(path), change, edited(manifest, path, change)


def adapt(bundle: Path, support: Path, out: Path) -> tuple[int, str, str]:
    """Exit status, the last line of output, and all of stderr of ``metaedge adapt``."""
    proc = subprocess.run([*CLI, "adapt", str(bundle), "--support", str(support), "--out", str(out),
                           "--backend", "onnxruntime"], capture_output=True, text=True)
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return proc.returncode, lines[-1] if lines else "", proc.stderr


def export_small(root: Path) -> Path:
    """A small real bundle (a few meta-training iterations: the manifest is what matters here)."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.train import TrainConfig, train

    run = train(TrainConfig(family="sensor-pressure", algo="metasgd", shots=3, queries=5, meta_batch=4, iterations=5,
                            hidden=[8], activation="tanh", inner_steps=2), root / "run", progress=False)
    return export_bundle(run, root / "good.meb", formats="all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/manifest-errors.md"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="metaedge-manifest-"))
    rows, failures = [], []
    try:
        good = export_small(root)
        manifest = json.loads(Bundle.open(good).manifest.to_json())  # the file's content, as the parts write it
        support = root / "support.csv"
        support.write_text(SUPPORT)
        work = root / "case"
        for field, change, broken in cases(manifest):
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(good, work)
            (work / "manifest.json").write_text(json.dumps(broken))
            code, message, stderr = adapt(work, support, root / "state.npz")
            message = message.replace(str(work), "BUNDLE").replace(str(root), "TMP")
            if code == 0:
                message = "(adapts: an optional key)" if change == "deleted" else "(adapts)"
            ok = "Traceback" not in stderr and (code == 0 and change == "deleted" or
                                                code == 1 and f"manifest field {field} " in message)
            if not ok:
                failures.append(f"{field} {change}: exit {code}: {message}")
            rows.append((field, change, code, message))
            print(f"{field:48s} {change:10s} exit {code}  {message}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    required = sum(1 for _, change, code, _ in rows if change == "deleted" and code == 1)
    optional = sum(1 for _, change, code, _ in rows if change == "deleted" and code == 0)
    table = ["| field | change | exit | message |", "| --- | --- | --- | --- |"]
    table += [f"| `{field}` | {change} | {code} | {text.replace('|', '/')} |" for field, change, code, text in rows]
    args.out.write_text(
        "# Manifest errors: every key deleted, every key wrongly typed\n\n"
        f"Made by `python scripts/manifest_errors.py --out {args.out}`: one small exported bundle, then for each key "
        "of its manifest a copy with the key deleted and one with a value of a wrong JSON type, each given to "
        "`metaedge adapt BUNDLE --support support.csv --out state.npz --backend onnxruntime`. BUNDLE and TMP are "
        "temporary directories. Maps (`files`, `ops`, `devices`, `footprint.graphs`, ...) are tried on their first "
        "entry, lists of records on their first element; `family` and `provenance.train` are free-form.\n\n"
        f"{len(rows)} cases: {required} deleted keys refused (required), {optional} deleted keys that still adapt "
        "(optional: keys added after the first format-1 bundles, parts a bundle may lack, entries of maps), every "
        "wrong type refused; "
        f"{len(failures)} cases broke the rule (exit 1 with one sentence naming the field, no traceback).\n\n"
        + "\n".join(table) + "\n")
    print(f"\n{len(rows)} cases, {len(failures)} broke the rule; table written to {args.out}")
    for f in failures:
        print("  " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
