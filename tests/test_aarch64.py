"""The torch-free runtime on aarch64 (Debian arm64 root under qemu user-mode emulation) equals x86_64 to 1e-5.

Needs the arm64 root that ``bash scripts/aarch64_check.sh setup`` makes (cached under
``~/.cache/metaedge/arm64-root`` or ``$METAEDGE_ARM64_ROOT``), qemu-user-static and root privileges (chroot);
skips with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
ARM_ROOT = Path(os.environ.get("METAEDGE_ARM64_ROOT", Path.home() / ".cache/metaedge/arm64-root"))


def _probe_module():
    spec = importlib.util.spec_from_file_location("runtime_probe", REPO / "scripts/runtime_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _skip_reason() -> str | None:
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64-static is not installed (apt-get install -y qemu-user-static)"
    if not (ARM_ROOT / ".wheels").is_file():
        return f"no arm64 root at {ARM_ROOT} (make it with: bash scripts/aarch64_check.sh setup)"
    if os.geteuid() != 0:
        return "running the arm64 root needs chroot, i.e. root privileges"
    try:  # the root and the emulator must run a program, not only exist
        probe = subprocess.run(["chroot", str(ARM_ROOT), "/usr/bin/python3", "-c", "print(6 * 7)"],
                               capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the arm64 root at {ARM_ROOT} does not run ({e})"
    if probe.stdout.strip() != "42":
        return f"the arm64 root at {ARM_ROOT} does not run python3 ({probe.stderr.strip()[-200:]})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_runtime_on_aarch64_equals_x86_64(tmp_path):
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    run = train(TrainConfig(family="sinusoid", algo="maml", shots=10, queries=10, meta_batch=4, iterations=10,
                            inner_steps=3), tmp_path / "run", progress=False)
    bundle = export_bundle(run, tmp_path / "bundle", check=False)
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "inputs.npz", xs=rng.uniform(-5, 5, (8, 1)).astype(np.float32),
             ys=rng.uniform(-3, 3, (8, 1)).astype(np.float32), xq=np.linspace(-5, 5, 40, dtype=np.float32)[:, None])
    probe = _probe_module()
    here = probe.probe(bundle, tmp_path / "inputs.npz")
    out = subprocess.run(["bash", "scripts/aarch64_check.sh", "run", str(bundle), str(tmp_path / "inputs.npz"),
                          str(tmp_path / "aarch64.json")], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    there = json.loads((tmp_path / "aarch64.json").read_text())
    assert there["machine"] == "aarch64" and there["detected_profile"] == "cpu-aarch64"
    assert (there["numpy"], there["onnxruntime"]) == (here["numpy"], here["onnxruntime"])
    result = probe.compare(here, there)
    assert result["steps_kept"][0] == result["steps_kept"][1]
    assert result["max_abs_difference"] <= 1e-5, result
