"""Reproducer: `metaedge adapt` on a zip bomb and on a zip with a symbolic link, next to a valid bundle.

Builds, from a bundle directory written by `metaedge export`:

- ``bomb.zip``: the bundle's files plus ``zeros.bin``, CLAIMED MiB of zeros deflated (streamed in 1 MiB chunks;
  4096 MiB of zeros deflate to about 4 MiB);
- ``link.zip``: the bundle's files with ``theta0.npy`` replaced by a symbolic link entry to ``/etc/passwd``;
- ``valid.zip``: the bundle's files alone (the control: it must adapt).

Each runs as ``metaedge adapt ZIP --support support.csv --out state.npz`` in a child process with its own empty
TMPDIR; the child's wall time and peak RSS come from ``os.wait4``. A zip is refused when the command exits 1 with
one ``Error:`` line; "nothing written" means no state file and an empty TMPDIR afterwards.

    python scripts/zip_bomb_check.py runs/ntc.meb                       # the 4 GiB bomb (takes ~20 s to build)
    python scripts/zip_bomb_check.py runs/ntc.meb --claimed-mib 64 --json
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CHUNK = 1 << 20


def _bundle_files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.iterdir() if p.is_file())


def make_bomb(bundle: Path, out: Path, claimed_mib: int) -> Path:
    """The bundle's files plus ``zeros.bin`` of ``claimed_mib`` MiB of zeros, deflated, written in chunks."""
    zeros = bytes(CHUNK)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in _bundle_files(bundle):
            z.write(f, f.name)
        info = zipfile.ZipInfo("zeros.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as entry:
            for _ in range(claimed_mib):
                entry.write(zeros)
    return out


def make_link(bundle: Path, out: Path, name: str = "theta0.npy", target: str = "/etc/passwd") -> Path:
    """The bundle's files with ``name`` replaced by a symbolic-link entry (Unix mode S_IFLNK) to ``target``."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in _bundle_files(bundle):
            if f.name != name:
                z.write(f, f.name)
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, target)
    return out


def make_valid(bundle: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in _bundle_files(bundle):
            z.write(f, f.name)
    return out


def support_csv(bundle: Path, out: Path) -> Path:
    """Three support rows (1, 2, 3 in every column) with the bundle's input and output columns."""
    from metaedge.runtime.bundle import Bundle

    manifest = Bundle.open(bundle, trust=()).manifest
    columns = [*manifest.input.names, *manifest.output.names]
    out.write_text(",".join(columns) + "\n" + "".join(",".join([str(i)] * len(columns)) + "\n" for i in (1, 2, 3)))
    return out


def metaedge_command() -> list[str]:
    script = Path(sys.executable).with_name("metaedge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "metaedge.cli"]


def run_measured(args: list[str], tmpdir: Path) -> dict:
    """Run ``args`` with ``TMPDIR=tmpdir``; exit code, wall seconds, the child's peak RSS (MiB), stderr's last line."""
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    env.pop("METAEDGE_TRUST", None)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return {"exit": proc.returncode, "seconds": round(seconds, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "message": lines[-1] if lines else ""}


def check(bundle: Path, work: Path, claimed_mib: int) -> list[dict]:
    """Build the three zips in ``work`` and run ``metaedge adapt`` on each; one result row per zip."""
    support = support_csv(bundle, work / "support.csv")
    started = time.perf_counter()
    bomb = make_bomb(bundle, work / "bomb.zip", claimed_mib)
    built = time.perf_counter() - started
    zips = {"bomb": bomb, "link": make_link(bundle, work / "link.zip"), "valid": make_valid(bundle, work / "valid.zip")}
    rows = []
    for what, archive in zips.items():
        tmpdir = work / f"tmp-{what}"
        tmpdir.mkdir()
        state = work / f"state-{what}.npz"
        result = run_measured([*metaedge_command(), "adapt", str(archive), "--support", str(support), "--out",
                               str(state)], tmpdir)
        info = zipfile.ZipFile(archive).infolist()
        result.update(zip=what, zip_mib=round(archive.stat().st_size / 2**20, 2),
                      claimed_mib=round(sum(i.file_size for i in info) / 2**20, 1),
                      state_written=state.exists(), tmp_left=sorted(p.name for p in tmpdir.iterdir()))
        if what == "bomb":
            result["build_seconds"] = round(built, 1)
        refused = result["exit"] == 1 and result["message"].startswith("Error: ")
        # wall seconds are reported, not judged: a loaded machine makes any start-up slow. What shows the bomb
        # was never inflated is the refusal naming the entry's size ratio, read from the zip's directory alone
        result["ok"] = (result["exit"] == 0 and result["state_written"] if what == "valid" else
                        refused and result["peak_rss_mib"] < 100 and
                        not result["state_written"] and not result["tmp_left"])
        rows.append(result)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="a bundle directory written by `metaedge export`")
    parser.add_argument("--claimed-mib", type=int, default=4096, help="uncompressed size of the bomb entry")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zip-bomb-check-") as work:
        rows = check(args.bundle, Path(work), args.claimed_mib)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'zip':6s} {'zip MiB':>8s} {'claimed MiB':>12s} {'exit':>4s} {'seconds':>8s} {'peak RSS MiB':>13s} "
              f"{'written':>8s}  ok  message")
        for r in rows:
            written = "yes" if r["state_written"] or r["tmp_left"] else "no"
            print(f"{r['zip']:6s} {r['zip_mib']:8.2f} {r['claimed_mib']:12.1f} {r['exit']:4d} {r['seconds']:8.3f} "
                  f"{r['peak_rss_mib']:13.1f} {written:>8s}  {'yes' if r['ok'] else 'NO '} {r['message'][:160]}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
