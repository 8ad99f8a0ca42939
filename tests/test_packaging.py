"""Packaging: a plain (non-editable) wheel maps the top-level folders into one ``metaedge`` package."""

from __future__ import annotations

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
                   "metaedge/runtime/__init__.py", "metaedge/export/__init__.py", "metaedge/devices/__init__.py"):
        assert module in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
