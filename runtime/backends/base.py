"""What every runtime backend provides, and the registry ``Model.load(backend=NAME)`` and the CLI choose from.

A backend runs a bundle's adaptation and forward pass; :class:`~metaedge.runtime.model.Model` keeps everything
else (input validation, normalisation, the class checks of prototype bundles, the guard flag). Adding one is a
module with a class that satisfies :class:`Backend`, plus ``register_backend("name", TheClass)``; see
``docs/backends.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..bundle import Bundle


@dataclass(frozen=True)
class Samples:
    """Checked samples ``(n, ...)`` in both units: ``physical`` (float32, as given) and ``standard`` (standardised
    with the bundle's normalisation: what its graphs take). Class labels ``(n,)`` int64 are the same array in
    both."""

    physical: np.ndarray
    standard: np.ndarray


@dataclass(frozen=True)
class Plan:
    """Which backend :meth:`Model.load` uses, with what, and why (one line for the log)."""

    backend: str
    reason: str
    device: str | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: tuple[dict, ...] = ({},)
    threads: int = 1


class Backend(Protocol):
    """One way of running a bundle. Instances come from :meth:`open`; states are flat float32 ``theta`` ``(P,)``
    in the manifest's layout (prototype bundles: ``(ways * embedding_dim,)``).

    Optional: ``adapt_outputs(theta, xs, ys, x, steps, guard) -> (theta', kept, outputs)``, :meth:`adapt` and
    :meth:`outputs` at the result for ``x`` in one go (``Model.adapt_predict`` uses it where present; the
    ``onnxruntime`` backend's is one graph run)."""

    #: True where :meth:`outputs` gives regression predictions in physical units (the C library de-standardises
    #: itself); False: standardised predictions. Classification outputs are logits either way.
    physical_outputs: ClassVar[bool]

    @classmethod
    def available(cls) -> bool:
        """Whether this machine can run the backend at all (its library is installed)."""
        ...

    @classmethod
    def reason(cls) -> str:
        """Why :meth:`available` is False (one clause)."""
        ...

    @classmethod
    def unsupported(cls, bundle: Bundle) -> str | None:
        """Why the backend cannot run this bundle (one sentence saying what to do), or None."""
        ...

    @classmethod
    def open(cls, bundle: Bundle, plan: Plan, theta0: np.ndarray, rates: np.ndarray) -> Backend:
        """The backend ready to run ``bundle`` (``theta0``, ``rates``: its verified arrays ``(P,)``)."""
        ...

    def adapt(self, theta: np.ndarray | None, xs: Samples, ys: Samples, steps: int, guard: bool
              ) -> tuple[np.ndarray, int]:
        """``steps`` adaptation steps on the support set from ``theta`` (None: the bundle's ``theta0``);
        with ``guard`` a step that raises the support loss (or makes it non-finite) is rolled back and the later
        ones are not taken. Returns the adapted state and the number of steps kept. Prototype bundles: the class
        prototypes, 0."""
        ...

    def outputs(self, theta: np.ndarray, x: Samples) -> np.ndarray:
        """Raw outputs ``(n, out)`` at state ``theta``: regression predictions (units: :attr:`physical_outputs`)
        or class logits."""
        ...


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str, cls: type[Backend]) -> None:
    """Make ``cls`` loadable as ``Model.load(..., backend=name)`` and ``--backend name``."""
    if not name or name == "auto" or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a backend name must be letters, digits, '-' or '_' and not 'auto', got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name].__qualname__})")
    _REGISTRY[name] = cls


def backend_names() -> tuple[str, ...]:
    """The registered backends, in registration order (the built-ins first)."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """The registered class for ``name``; ValueError naming the choices for an unknown one."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# --- the guard rule, shared by the backends that step in Python --------------------------------------------------

Step = Callable[[np.ndarray], tuple[np.ndarray, float]]


def guarded_steps(step: Step, support_loss: Callable[[np.ndarray], float], start: np.ndarray, steps: int,
                  guard: bool) -> tuple[np.ndarray, int]:
    """Take ``steps`` of ``step`` (``theta -> (next theta, support loss at theta)``) from ``start``; with ``guard``
    stop before the first step that raises the support loss or makes it non-finite (later steps would start from
    the same point and be rejected too). ``support_loss`` is called only for the last step's result."""
    theta, kept = start, 0
    nxt = step(theta) if steps else None
    for i in range(steps):
        new, loss = nxt  # the step from `theta`, and the support loss at `theta`
        last = i == steps - 1
        if not last or guard:
            # the next step's graph also reports the support loss at `new`: the guard reuses it, so only the final
            # step costs an extra forward
            nxt = step(new) if not last else None
            after = nxt[1] if not last else support_loss(new)
            if guard and (not np.isfinite(after) or after > loss):
                break
        theta, kept = new, kept + 1
    return theta, kept


def kept_steps(losses: np.ndarray, steps: int, guard: bool) -> int:
    """Of an unrolled run with support ``losses`` ``(K + 1,)`` (before each step and after the last), how many
    steps the guard keeps: those before the first that raised the loss or made it non-finite."""
    if not guard:
        return steps
    values = losses.tolist()  # K + 1 floats: a Python loop beats numpy's per-call overhead on a hot path
    for i in range(steps):
        if not (math.isfinite(values[i + 1]) and values[i + 1] <= values[i]):
            return i
    return steps
