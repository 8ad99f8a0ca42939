"""Which profile matches the machine under a root directory, and the evidence that says so.

Rules, in order (each file is read under ``root``, so tests pass a fake root):

1. Jetson: ``/proc/device-tree/model`` (a NUL-terminated string such as ``NVIDIA Jetson Orin Nano Developer Kit``)
   matched against each Jetson profile's ``match.device_tree_model`` substrings; failing that, the module part
   numbers in ``/proc/device-tree/compatible`` (``nvidia,p3767-0005`` ...). ``/etc/nv_tegra_release``
   (``# R36 (release), REVISION: 4.3, ...``) gives the L4T release, hence the JetPack and TensorRT family.
2. Otherwise the CPU architecture: ``uname`` when ``root`` is the live ``/`` (under emulation only uname is
   right), else the ``machine`` argument, else ``/proc/cpuinfo`` (x86 lists ``flags`` with ``lm``, 64-bit Arm
   ``CPU architecture: 8`` and ``Features``); matched against the CPU profiles' ``match.machine``.

Microcontroller profiles (Cortex-M) have no ``match``: a Linux root never is one, they are chosen by name.
Standard library only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .profiles import Profile, load_profiles

#: CPU features worth reporting (the rest of /proc/cpuinfo's list is noise for this purpose)
NOTABLE_FEATURES = ("avx", "avx2", "avx512f", "fma", "f16c", "sse4_2", "asimd", "fphp", "asimdhp", "asimddp", "sve",
                    "sve2", "i8mm", "bf16")


@dataclass(frozen=True)
class DetectionResult:
    """The matched profile name (None when nothing matches) and what was read to decide it."""

    profile: str | None
    machine: str | None
    evidence: tuple[str, ...]
    features: tuple[str, ...] = ()
    jetson: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """One line: the choice and its evidence."""
        what = self.profile or "no profile"
        return f"{what} ({'; '.join(self.evidence)})" if self.evidence else what


def _read(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def _device_tree_strings(text: str | None) -> list[str]:
    """Device-tree string properties are NUL-terminated (lists are NUL-separated)."""
    return [s.strip() for s in (text or "").split("\0") if s.strip()]


def parse_tegra_release(text: str) -> dict[str, str]:
    """``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ...`` -> ``{"l4t": "36.4.3", "l4t_major": "36",
    "board": "generic"}`` (empty when the first line is not in that form)."""
    first = text.splitlines()[0] if text else ""
    m = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if not m:
        return {}
    out = {"l4t_major": m.group(1), "l4t": f"{m.group(1)}.{m.group(2)}"}
    board = re.search(r"BOARD:\s*([^,]+)", first)
    if board:
        out["board"] = board.group(1).strip()
    return out


def parse_cpuinfo(text: str) -> tuple[str | None, tuple[str, ...]]:
    """``(machine, notable features)`` from ``/proc/cpuinfo``: x86 kernels list ``flags`` (``lm`` = 64-bit),
    arm64 kernels ``Features`` and ``CPU architecture: 8``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if "flags" in fields:
        flags = set(fields["flags"].split())
        return ("x86_64" if "lm" in flags else "i686"), tuple(f for f in NOTABLE_FEATURES if f in flags)
    if "Features" in fields:
        features = set(fields["Features"].split())
        machine = "aarch64" if fields.get("CPU architecture") == "8" or "asimd" in features else "armv7l"
        return machine, tuple(f for f in NOTABLE_FEATURES if f in features)
    return None, ()


def _jetson(root: Path, profiles: dict[str, Profile], evidence: list[str]) -> tuple[str | None, dict[str, str]]:
    model_text = _read(root, "proc/device-tree/model")
    tegra_text = _read(root, "etc/nv_tegra_release")
    compatible = _device_tree_strings(_read(root, "proc/device-tree/compatible"))
    model = " ".join(_device_tree_strings(model_text))
    info: dict[str, str] = {}
    if model:
        evidence.append(f"/proc/device-tree/model: {model!r}")
    if tegra_text is not None:
        info = parse_tegra_release(tegra_text)
        shown = f"L4T R{info['l4t']}" if info else f"unrecognised first line {tegra_text.splitlines()[:1]}"
        evidence.append(f"/etc/nv_tegra_release: {shown}")
    jetsons = [p for p in profiles.values() if p.kind == "jetson"]
    found = next((p for p in jetsons if any(s.lower() in model.lower() for s in p.match.get("device_tree_model", ()))),
                 None)
    if found is None and compatible:
        found = next((p for p in jetsons if any(c.startswith(s) for s in p.match.get("device_tree_compatible", ())
                                                 for c in compatible)), None)
        if found is not None:
            evidence.append(f"/proc/device-tree/compatible: {', '.join(compatible)}")
    if found is None:
        if tegra_text is not None or "jetson" in model.lower():
            evidence.append("a Jetson whose model no profile lists; treated as a generic CPU")
        return None, info
    info["model"] = model
    if "l4t_major" in info:
        family = found.jetpack_for_l4t(info["l4t_major"])
        if family is not None:
            info.update(jetpack=family.jetpack, tensorrt=family.tensorrt)
        else:
            known = ", ".join(f"R{j.l4t} (JetPack {j.jetpack})" for j in found.jetpack)
            evidence.append(f"L4T R{info['l4t_major']} is not a release {found.name} lists ({known})")
    return found.name, info


def detect(root: Path = Path("/"), machine: str | None = None,
           profiles: dict[str, Profile] | None = None) -> DetectionResult:
    """The profile matching the machine whose filesystem is at ``root`` (see the module doc for the rules).

    ``machine`` overrides the CPU architecture (``uname -m``); on the live root it defaults to ``os.uname()``.
    """
    profiles = load_profiles() if profiles is None else profiles
    root = Path(root)
    evidence: list[str] = []
    name, jetson = _jetson(root, profiles, evidence)
    cpuinfo = _read(root, "proc/cpuinfo")
    from_cpuinfo, features = parse_cpuinfo(cpuinfo) if cpuinfo else (None, ())
    if machine is None and root.resolve() == Path("/"):
        machine = os.uname().machine
        evidence.append(f"uname: {machine}")
        if from_cpuinfo and from_cpuinfo != machine:  # qemu user-mode shows the host's /proc/cpuinfo
            evidence.append(f"/proc/cpuinfo describes {from_cpuinfo} (emulated?); uname wins")
            features = ()
        elif features:
            evidence.append(f"/proc/cpuinfo features: {' '.join(features)}")
    elif machine is not None:
        evidence.append(f"machine given: {machine}")
    elif from_cpuinfo:
        machine = from_cpuinfo
        evidence.append(f"/proc/cpuinfo: {machine}" + (f" ({' '.join(features)})" if features else ""))
    if name is None:
        model = " ".join(_device_tree_strings(_read(root, "proc/device-tree/model")))
        if model and not any(e.startswith("/proc/device-tree/model") for e in evidence):
            evidence.append(f"/proc/device-tree/model: {model!r}")
        cpus = [p for p in profiles.values() if p.kind == "cpu"]
        found = next((p for p in cpus if machine and machine in p.match.get("machine", ())), None)
        if found is not None:
            name = found.name
        elif machine:
            evidence.append(f"no profile for architecture {machine}")
        else:
            evidence.append("neither uname nor /proc/cpuinfo said which architecture this is")
    elif machine and machine != profiles[name].arch:
        evidence.append(f"architecture {machine} is not {profiles[name].arch}, as a Jetson's is")
    return DetectionResult(name, machine, tuple(evidence), tuple(features), jetson)
