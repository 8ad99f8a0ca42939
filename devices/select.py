"""Choosing the backend for a bundle on a device: the profile's preference order, filtered by what is installed
here and what the bundle holds, with the reason in words.

``available`` describes this machine (``metaedge.runtime.backends.available_backends()`` builds it)::

    {"onnxruntime": ["CUDAExecutionProvider", "CPUExecutionProvider"] or None (not importable),
     "tensorrt": bool (the tensorrt module imports), "native": bool (the C library loads),
     "cuda": bool (a CUDA GPU answers; optional, assumed present when absent)}

Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .detect import DetectionResult, detect
from .fit import BundleTraits, backend_support
from .profiles import Profile, ProfileError, get_profile, load_profiles


class NoBackend(InputError):
    """No backend of the profile is installed here and able to run the bundle."""


@dataclass(frozen=True)
class Choice:
    """The chosen backend; for ``onnxruntime`` the providers in order with their options (one dict each)."""

    profile: str
    backend: str
    providers: tuple[str, ...]
    provider_options: tuple[dict[str, Any], ...]
    threads: int
    precision: dict[str, str]
    reason: str
    options: dict[str, Any]

    def log_line(self) -> str:
        """The one line the runtime logs: device, backend, providers and why."""
        providers = f" [{', '.join(self.providers)}]" if self.providers else ""
        return f"metaedge: device {self.profile}: backend {self.backend}{providers}, {self.threads} thread(s): " \
               f"{self.reason}"


def _expand(options: dict[str, Any]) -> dict[str, Any]:
    """``~`` in path-valued options (engine cache directories) means the user's home on the device."""
    return {k: os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v for k, v in options.items()}


def _why_not(backend: str, profile: Profile, bundle: BundleTraits, available: dict[str, Any],
             unsupported: str | None) -> str | None:
    if backend == "tensorrt":
        if not available.get("tensorrt"):
            return "the tensorrt Python module is not installed"
        if available.get("cuda") is False:
            return "no CUDA GPU answers"
        if profile.name not in bundle.tensorrt_devices:
            return (f"the bundle has no TensorRT engines for {profile.name} "
                    f"(metaedge export --format tensorrt --device {profile.name})")
    elif backend == "onnxruntime":
        if available.get("onnxruntime") is None:
            return "onnxruntime is not installed"
    elif backend == "native" and not available.get("native"):
        return "the metaedge C library is not built here"
    return unsupported


def choose_backend(profile: Profile, bundle: BundleTraits, available: dict[str, Any]) -> Choice:
    """The first backend of ``profile`` (in its preference order) that is installed here and can run the bundle.

    For ``onnxruntime`` the profile's execution providers are kept in order where this onnxruntime build has them
    (the CUDA and TensorRT providers also need a GPU). Raises :class:`NoBackend` listing every backend's reason.
    """
    support = backend_support(profile, bundle)
    skipped: list[str] = []
    for entry in profile.backends:
        why = _why_not(entry.name, profile, bundle, available, support.get(entry.name))
        if why:
            skipped.append(f"{entry.name} skipped: {why}")
            continue
        providers: list[tuple[str, dict[str, Any]]] = []
        if entry.name == "onnxruntime":
            have = set(available.get("onnxruntime") or ())
            for p in entry.providers:
                gpu = p.name != "CPUExecutionProvider"
                if p.name not in have:
                    skipped.append(f"{p.name} is not in this onnxruntime build")
                elif gpu and available.get("cuda") is False:
                    skipped.append(f"{p.name} skipped: no CUDA GPU answers")
                else:
                    providers.append((p.name, _expand(p.options)))
            if not providers:
                skipped.append(f"onnxruntime skipped: none of {', '.join(p.name for p in entry.providers)} "
                               f"is available (this build has {', '.join(sorted(have)) or 'none'})")
                continue
        first = "the first" if not skipped else "the first usable"
        reason = f"{first} of {profile.name}'s backends ({', '.join(profile.backend_names)})"
        if skipped:
            reason += "; " + "; ".join(skipped)
        return Choice(profile.name, entry.name, tuple(n for n, _ in providers), tuple(o for _, o in providers),
                      profile.threads, dict(profile.precision), reason, _expand(entry.options))
    raise NoBackend(f"no backend of {profile.name} can run this bundle here: " + "; ".join(skipped))


def resolve_device(device: str = "auto", root: Path = Path("/"),
                   profiles: dict[str, Profile] | None = None) -> tuple[Profile, DetectionResult | None]:
    """``--device auto|NAME``: the named profile, or the detected one (with its evidence). An unknown name or an
    undetectable machine is a :class:`ProfileError` that says what to pass instead."""
    profiles = load_profiles() if profiles is None else profiles
    if device != "auto":
        return get_profile(device, profiles), None
    found = detect(root, profiles=profiles)
    if found.profile is None:
        raise ProfileError(f"could not tell which device this is ({found.reason}); pass --device with one of "
                           f"{', '.join(profiles)}")
    return profiles[found.profile], found
