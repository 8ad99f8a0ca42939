"""Packaging: a plain (non-editable) wheel maps the top-level folders into one ``metaedge`` package, and ships the
compiled C library and its header but no C sources, C tests, fuzz corpora or benchmarks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_holds_every_package(tmp_path):
    pytest.importorskip("scikit_build_core")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         "-q"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("metaedge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("metaedge/cli.py", "metaedge/sdk/train.py", "metaedge/sdk/tasks/sensors.py",
                   "metaedge/runtime/__init__.py", "metaedge/export/__init__.py", "metaedge/devices/__init__.py",
                   "metaedge/knowledge/store.py", "metaedge/knowledge/migrations/env.py",
                   "metaedge/knowledge/migrations/versions/0001_initial.py"):
        assert module in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    # the C side: the library next to native.py and the public header, nothing else
    library = {"linux": "metaedge/runtime/libmetaedge.so", "darwin": "metaedge/runtime/libmetaedge.dylib",
               "win32": "metaedge/runtime/metaedge.dll"}.get(sys.platform, "metaedge/runtime/libmetaedge.so")
    assert library in names and "metaedge/runtime/include/metaedge.h" in names
    leaked = sorted(n for n in names if n.startswith("metaedge/runtime/c/") or
                    n.endswith((".c", ".mebin", ".mest")) or "/fuzz/" in n or "/bench/" in n)
    assert leaked == [], leaked
    c_files = sorted(n for n in names if n.endswith((".h", ".so", ".dylib", ".dll", ".a")))
    assert c_files == sorted([library, "metaedge/runtime/include/metaedge.h"])
    with zipfile.ZipFile(wheel) as z:
        assert z.read("metaedge/runtime/include/metaedge.h") == (ROOT / "runtime/c/include/metaedge.h").read_bytes()
        z.extract(library, tmp_path / "unpacked")
    if shutil.which("nm") and sys.platform == "linux":  # the wheel's library exports the header's API only
        out = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "unpacked" / library)],
                             capture_output=True, text=True, check=True).stdout
        exported = {line.split()[-1] for line in out.splitlines() if len(line.split()) >= 3}
        header = (ROOT / "runtime/c/include/metaedge.h").read_text()
        api = set(re.findall(r"^ME_API\b[^;(]*?\b(me_\w+)\s*\(", header, flags=re.M))
        assert {name for name in exported if not name.startswith("_")} == api
