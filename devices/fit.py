"""Whether a bundle fits a device: memory against the profile's budget, operators against its backends.

The memory figures come from the manifest's ``footprint`` (written at export by ``metaedge.export.footprint``):
constants inside the graphs, the adapted parameters, an upper bound on the activations (every intermediate tensor
alive at once, no buffer reuse) as a fixed part plus a part per sample, and for firmware the C library's arena and
``model.mebin`` size. A bundle without a footprint is judged on its parameter count alone, and says so.
Standard library only: the functions take any object with the attributes of :class:`BundleTraits` (the runtime's
``Manifest`` has them), since this package may not import the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import InputError
from .ops import outside_tensorrt
from .profiles import Profile

#: support-set size assumed when neither the caller nor the manifest says
DEFAULT_SHOTS = 10


class NativeNeeds(Protocol):
    """Firmware figures: ``model.mebin`` bytes (flash) and the C library's arena for ``max_shots`` samples (RAM)."""

    @property
    def mebin_bytes(self) -> int: ...
    @property
    def max_shots(self) -> int: ...
    @property
    def arena_bytes(self) -> int: ...


class ActivationNeeds(Protocol):
    """Activation bound of the largest graph: ``fixed_bytes + per_sample_bytes * n``."""

    @property
    def fixed_bytes(self) -> int: ...
    @property
    def per_sample_bytes(self) -> int: ...


class FootprintNeeds(Protocol):
    """What export measured: the support size assumed, graph constants, activations, firmware figures."""

    @property
    def shots(self) -> int: ...
    @property
    def weights_bytes(self) -> int: ...
    @property
    def activations(self) -> ActivationNeeds: ...
    @property
    def native(self) -> NativeNeeds | None: ...


class BundleTraits(Protocol):
    """What the fit and backend checks read of a bundle (``metaedge.runtime.manifest.Manifest`` provides it)."""

    @property
    def has_mebin(self) -> bool: ...
    @property
    def has_graphs(self) -> bool: ...
    @property
    def operators(self) -> frozenset[str]: ...
    @property
    def tensorrt_devices(self) -> frozenset[str]: ...
    @property
    def inner_steps(self) -> int: ...
    @property
    def state_size(self) -> int: ...
    @property
    def footprint(self) -> FootprintNeeds | None: ...


class DoesNotFit(InputError):
    """A bundle exceeds a device's memory budget or uses operators none of its backends runs."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a bundle needs on a Linux device (``total``) with the parts that make it up."""

    weights: int
    parameters: int
    activations: int
    samples: int
    complete: bool  # False: no footprint in the manifest, parameters only

    @property
    def total(self) -> int:
        return self.weights + self.parameters + self.activations


def human_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def memory_estimate(bundle: BundleTraits, shots: int | None = None, batch: int | None = None) -> MemoryEstimate:
    """What adapting on ``shots`` samples and predicting ``batch`` at once needs; the parameter part counts the
    state, the rates, one step's result and the unrolled graph's per-step history."""
    fp = bundle.footprint
    shots = int(shots or (fp.shots if fp else 0) or DEFAULT_SHOTS)
    samples = max(shots, int(batch or 0))
    parameters = 4 * bundle.state_size * (3 + bundle.inner_steps)
    if fp is None:
        return MemoryEstimate(0, parameters, 0, samples, False)
    activations = fp.activations.fixed_bytes + fp.activations.per_sample_bytes * samples
    return MemoryEstimate(fp.weights_bytes, parameters, activations, samples, True)


def backend_support(profile: Profile, bundle: BundleTraits) -> dict[str, str | None]:
    """For each backend of ``profile``: None when it can run the bundle, else why not (one clause)."""
    out: dict[str, str | None] = {}
    for backend in profile.backend_names:
        if backend == "native":
            out[backend] = None if bundle.has_mebin else \
                "the bundle has no model.mebin for the C library (export with --format c or all)"
        elif not bundle.has_graphs:
            out[backend] = "the bundle has no ONNX graphs (exported with --format c only)"
        elif backend == "tensorrt":
            outside = outside_tensorrt(sorted(bundle.operators))
            out[backend] = f"its graphs use {', '.join(outside)}, outside TensorRT's operator set" if outside else None
        else:  # onnxruntime's CPU provider runs every standard ONNX operator
            out[backend] = None
    return out


def fit_problems(profile: Profile, bundle: BundleTraits, shots: int | None = None,
                 batch: int | None = None) -> list[str]:
    """Every reason the bundle does not fit ``profile`` (empty when it fits), each one sentence."""
    problems = []
    support = backend_support(profile, bundle)
    if all(support.values()):
        why = "; ".join(f"{b}: {r}" for b, r in support.items())
        problems.append(f"none of {profile.name}'s backends can run this bundle ({why})")
    if profile.kind == "mcu":
        problems += _firmware_problems(profile, bundle)
        return problems
    need = memory_estimate(bundle, shots, batch)
    if need.total > profile.memory_budget_bytes:
        problems.append(
            f"the bundle needs about {human_bytes(need.total)} (graph constants {human_bytes(need.weights)}, "
            f"parameters {human_bytes(need.parameters)}, activations for {need.samples} samples "
            f"{human_bytes(need.activations)}) but {profile.name}'s memory budget is "
            f"{human_bytes(profile.memory_budget_bytes)}; use a smaller model, adapt fewer parameters (--adapt head) "
            "or fewer samples at once")
    return problems


def _firmware_problems(profile: Profile, bundle: BundleTraits) -> list[str]:
    native = bundle.footprint.native if bundle.footprint else None
    if not bundle.has_mebin:
        return []  # already reported: no backend can run it
    if native is None:
        return [f"the bundle records no firmware footprint (arena and model size), so it cannot be checked against "
                f"{profile.name}; re-export it with this metaedge"]
    problems = []
    if native.arena_bytes > profile.memory_budget_bytes:
        problems.append(f"the C library's arena for {native.max_shots} samples is "
                        f"{human_bytes(native.arena_bytes)} but {profile.name} has "
                        f"{human_bytes(profile.memory_budget_bytes)} of RAM for it; use fewer shots or a smaller model")
    flash = profile.flash_budget_bytes
    if flash is not None and native.mebin_bytes > flash:
        problems.append(f"model.mebin is {human_bytes(native.mebin_bytes)} but {profile.name} has "
                        f"{human_bytes(flash)} of flash for it; use a smaller model")
    return problems


def check_fits(profile: Profile, bundle: BundleTraits, shots: int | None = None, batch: int | None = None) -> None:
    """Raise :class:`DoesNotFit` (a ``ValueError``) with one clear sentence when the bundle exceeds the device."""
    problems = fit_problems(profile, bundle, shots, batch)
    if problems:
        raise DoesNotFit(f"this bundle does not fit {profile.name}: " + "; and ".join(problems))


@dataclass(frozen=True)
class FitRecord:
    """Whether a bundle fits one profile: the problems if not, and the memory it needs there (None on MCUs)."""

    fits: bool
    problems: tuple[str, ...]
    memory_bytes: int | None


def checked_devices(bundle: BundleTraits, profiles: dict[str, Profile]) -> dict[str, FitRecord]:
    """What the exporter records in the manifest's ``devices``: for every profile whether the bundle fits, the
    memory it needs there, and the problems if not."""
    out = {}
    for name, profile in profiles.items():
        problems = fit_problems(profile, bundle)
        memory = memory_estimate(bundle).total if profile.kind != "mcu" else None
        out[name] = FitRecord(not problems, tuple(problems), memory)
    return out
