"""The ``native`` backend: the bundle's ``model.mebin`` in the metaedge C library (``runtime/native.py``).

The library takes physical units (the normalisation is inside ``model.mebin``) and applies the same guard itself
(``take_step`` in ``runtime/c/src/adapt.c``), so this wrapper only passes arrays through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .base import Plan, Samples

if TYPE_CHECKING:
    from ..bundle import Bundle


class NativeBackend:
    """A :class:`~metaedge.runtime.native.NativeModel` behind the :class:`~.base.Backend` protocol."""

    physical_outputs: ClassVar[bool] = True

    def __init__(self, model) -> None:
        self._model = model

    @classmethod
    def available(cls) -> bool:
        from .. import native

        return bool(native.available())

    @classmethod
    def reason(cls) -> str:
        from .. import native

        return f"the native C library is not available here ({native.unavailable_reason()})"

    @classmethod
    def unsupported(cls, bundle: Bundle) -> str | None:
        if bundle.manifest.has_mebin:
            return None
        return (f"{bundle.path} has no model.mebin for the native backend; re-export it with --format c or all "
                "(MLP models)")

    @classmethod
    def open(cls, bundle: Bundle, plan: Plan, theta0: np.ndarray, rates: np.ndarray) -> NativeBackend:
        from ..native import NativeModel

        return cls(NativeModel(bundle.file(bundle.manifest.firmware.mebin).read_bytes()))

    def adapt(self, theta: np.ndarray | None, xs: Samples, ys: Samples, steps: int, guard: bool
              ) -> tuple[np.ndarray, int]:
        if self._model.prototypes:
            return self._model.adapt(xs.physical, ys.physical)[0], 0
        options = {"start": theta} if theta is not None else {}  # None: the library's own copy of theta0
        return self._model.adapt(xs.physical, ys.physical, steps=steps, guard=guard, **options)

    def outputs(self, theta: np.ndarray, x: Samples) -> np.ndarray:
        return self._model.outputs(theta, x.physical)
