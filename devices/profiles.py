"""Device profiles: what the project knows about each target, read from ``devices/profiles/<name>.json``.

A profile names the target's backends in preference order (``tensorrt``, ``onnxruntime`` with its execution
providers and their options, ``native`` for the C library), the CPU thread count, the precision of the forward and
adapt computations, the memory budget a bundle must fit in, how to recognise the target (``match``), and for a
Jetson the JetPack / L4T / TensorRT families it runs. Profiles are data: a new target is a new JSON file.

Standard library only (the on-device runtime reads these).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import InputError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

#: backends a profile may name, in the project's vocabulary
BACKENDS = ("tensorrt", "onnxruntime", "native")
#: ONNX Runtime execution providers a profile may name (those the project configures and has documented options for)
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
KINDS = ("cpu", "jetson", "mcu")
PRECISIONS = ("fp32", "fp16")
MATCH_KEYS = ("machine", "device_tree_model", "device_tree_compatible")


class ProfileError(InputError):
    """A profile file that is missing, not JSON, or names something the project does not know."""


@dataclass(frozen=True)
class Provider:
    """One ONNX Runtime execution provider and its options (passed to ``InferenceSession`` as they are)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Backend:
    """One backend of a profile: ``tensorrt``, ``onnxruntime`` (with ``providers``) or ``native``."""

    name: str
    providers: tuple[Provider, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JetPack:
    """A JetPack release family: its L4T major version (``/etc/nv_tegra_release`` ``# R36``) and TensorRT family."""

    jetpack: str
    l4t: str
    tensorrt: str


@dataclass(frozen=True)
class Profile:
    """A target device. ``backends`` are in preference order; ``memory_budget_bytes`` bounds what a bundle may use
    (RAM for the runtime, or the firmware's arena on a microcontroller, whose model bytes count against
    ``flash_budget_bytes``)."""

    name: str
    description: str
    kind: str
    arch: str
    backends: tuple[Backend, ...]
    threads: int
    precision: dict[str, str]
    memory_budget_bytes: int
    match: dict[str, tuple[str, ...]] = field(default_factory=dict)
    flash_budget_bytes: int | None = None
    jetpack: tuple[JetPack, ...] = ()

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def backend(self, name: str) -> Backend | None:
        """The profile's entry for backend ``name``, or None when it does not list it."""
        return next((b for b in self.backends if b.name == name), None)

    @property
    def auto_detectable(self) -> bool:
        """Whether :func:`metaedge.devices.detect` can pick this profile (microcontrollers have no Linux root)."""
        return any(self.match.values())

    def jetpack_for_l4t(self, l4t_major: str) -> JetPack | None:
        """The JetPack family whose L4T major version is ``l4t_major`` (e.g. ``"36"`` -> JetPack 6, TensorRT 10)."""
        return next((j for j in self.jetpack if j.l4t == l4t_major), None)


def _require(data: dict, key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ProfileError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):  # JSON true is not a count
        raise ProfileError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _choice(value: str, allowed: tuple[str, ...], what: str, where: str) -> str:
    if value not in allowed:
        raise ProfileError(f"{where}: unknown {what} {value!r}; known: {', '.join(allowed)}")
    return value


def _backend(data: Any, where: str) -> Backend:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: each backend must be an object with a 'name', got {data!r}")
    name = _choice(_require(data, "name", str, where), BACKENDS, "backend", where)
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise ProfileError(f"{where}: options of backend {name!r} must be an object")
    providers = []
    if name == "onnxruntime":
        for entry in _require(data, "providers", list, where):
            if not isinstance(entry, dict) or not isinstance(entry.get("options", {}), dict):
                raise ProfileError(f"{where}: each provider must be an object with 'name' and 'options'")
            pname = _choice(_require(entry, "name", str, where), PROVIDERS, "execution provider", where)
            providers.append(Provider(pname, dict(entry.get("options", {}))))
        if not providers:
            raise ProfileError(f"{where}: backend 'onnxruntime' lists no execution providers")
    elif "providers" in data:
        raise ProfileError(f"{where}: only the 'onnxruntime' backend takes providers, not {name!r}")
    return Backend(name, tuple(providers), dict(options))


def parse_profile(data: Any, where: str = "profile") -> Profile:
    """A :class:`Profile` from its JSON object; every unknown name or missing key is a :class:`ProfileError`."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile must be a JSON object")
    name = _require(data, "name", str, where)
    kind = _choice(_require(data, "kind", str, where), KINDS, "kind", where)
    backends = tuple(_backend(b, where) for b in _require(data, "backends", list, where))
    if not backends:
        raise ProfileError(f"{where}: lists no backends")
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: a backend is listed twice ({', '.join(names)})")
    precision = _require(data, "precision", dict, where)
    for part in ("forward", "adapt"):
        _choice(precision.get(part, "<missing>"), PRECISIONS, f"precision.{part}", where)
    match = _require(data, "match", dict, where) if "match" in data else {}
    for key, values in match.items():
        _choice(key, MATCH_KEYS, "match key", where)
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ProfileError(f"{where}: match.{key} must be a list of non-empty strings")
    threads = _require(data, "threads", int, where)
    budget = _require(data, "memory_budget_bytes", int, where)
    flash = data.get("flash_budget_bytes")
    if threads < 1 or budget <= 0 or (flash is not None and (not isinstance(flash, int) or flash <= 0)):
        raise ProfileError(f"{where}: threads and memory budgets must be positive integers")
    jetpack = []
    for entry in data.get("jetpack", []):
        keys = ("jetpack", "l4t", "tensorrt")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in keys):
            raise ProfileError(f"{where}: each jetpack entry needs string 'jetpack', 'l4t' and 'tensorrt'")
        jetpack.append(JetPack(entry["jetpack"], entry["l4t"], entry["tensorrt"]))
    if kind == "jetson" and not jetpack:
        raise ProfileError(f"{where}: a jetson profile must list its JetPack / TensorRT families")
    return Profile(name=name, description=_require(data, "description", str, where), kind=kind,
                   arch=_require(data, "arch", str, where), backends=backends, threads=threads,
                   precision=dict(precision), memory_budget_bytes=budget,
                   match={k: tuple(v) for k, v in match.items()}, flash_budget_bytes=flash, jetpack=tuple(jetpack))


def read_profile(path: str | Path) -> Profile:
    """Read and validate one profile file; its ``name`` must equal the file's stem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ProfileError(f"{path}: cannot read the profile ({e.strerror})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: not valid JSON ({e})") from e
    profile = parse_profile(data, str(path))
    if profile.name != path.stem:
        raise ProfileError(f"{path}: names itself {profile.name!r}; a profile file must be named <name>.json")
    return profile


def load_profiles(directory: str | Path | None = None) -> dict[str, Profile]:
    """Every profile in ``directory`` (default: the packaged ``devices/profiles``), by name, sorted."""
    if directory is None:
        return dict(_packaged())
    return _read_all(Path(directory))


def _read_all(directory: Path) -> dict[str, Profile]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ProfileError(f"{directory}: holds no profile files (*.json)")
    return {p.name: p for p in map(read_profile, files)}


@lru_cache(maxsize=1)
def _packaged() -> tuple[tuple[str, Profile], ...]:
    return tuple(_read_all(PROFILE_DIR).items())


def get_profile(name: str, profiles: dict[str, Profile] | None = None) -> Profile:
    """The profile called ``name``; an unknown name is a :class:`ProfileError` listing the valid ones."""
    profiles = load_profiles() if profiles is None else profiles
    if name not in profiles:
        raise ProfileError(f"unknown device {name!r}; choose one of {', '.join(profiles)} (or 'auto')")
    return profiles[name]
