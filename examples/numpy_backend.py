"""A toy runtime backend in pure numpy: small MLP regression bundles, adapted by SGD with hand-written backprop.

The whole of what adding a backend takes (``docs/backends.md``): a class with the methods of
``metaedge.runtime.backends.Backend`` and one ``register_backend`` call. After ``import numpy_backend``::

    Model.load("model.meb", backend="numpy-mlp")
    metaedge adapt model.meb --support s.csv --out state.npz --backend numpy-mlp   # in a process that imported it

It reads the layout and rates from the bundle and ignores the ONNX graphs: the parameters of an MLP
``Linear -> act -> ... -> Linear`` adapted in full (``--adapt all``) are exactly the state ``theta``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from metaedge.runtime.backends import Plan, Samples, guarded_steps, register_backend
from metaedge.runtime.bundle import Bundle

#: activation and its derivative (given the pre-activation)
ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
}


class NumpyMLPBackend:
    """Forward and gradient of an MLP in numpy; the guard comes from the shared :func:`guarded_steps` rule."""

    physical_outputs: ClassVar[bool] = False  # it works on standardised samples, like the ONNX graphs

    def __init__(self, bundle: Bundle, theta0: np.ndarray, rates: np.ndarray) -> None:
        m = bundle.manifest
        self.layout = m.adaptation.layout
        self.theta0, self.rates = theta0, rates
        self.act, self.act_grad = ACTIVATIONS[m.provenance.train.get("activation", "relu")]
        names = self.layout.names
        self.layers = list(zip(names[0::2], names[1::2]))  # (weight, bias) names, input to output

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def reason(cls) -> str:
        return "numpy is always available"

    @classmethod
    def unsupported(cls, bundle: Bundle) -> str | None:
        m = bundle.manifest
        names = m.adaptation.layout.names
        pairs = len(names) % 2 == 0 and all(w.endswith(".weight") and b == w[:-6] + "bias"
                                            for w, b in zip(names[0::2], names[1::2]))
        if (m.classification or m.adaptation.solver != "sgd" or m.loss != "mse" or not names or not pairs
                or m.provenance.train.get("activation", "relu") not in ACTIVATIONS or m.provenance.train.get("skip")):
            return (f"{bundle.path}: the numpy-mlp backend runs MLP regression bundles (relu or tanh, no skip path) "
                    "adapted in full by SGD; use backend='onnxruntime'")
        return None

    @classmethod
    def open(cls, bundle: Bundle, plan: Plan, theta0: np.ndarray, rates: np.ndarray) -> NumpyMLPBackend:
        return cls(bundle, theta0, rates)

    def _forward(self, theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Outputs ``(n, out)``, each layer's input ``h`` and pre-activation ``z``."""
        p = self.layout.split(theta)
        hs, zs, h = [], [], x
        for i, (w, b) in enumerate(self.layers):
            hs.append(h)
            z = h @ p[w].T + p[b]
            zs.append(z)
            h = self.act(z) if i < len(self.layers) - 1 else z
        return h, hs, zs

    def _step(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """``(theta - rates * grad, MSE at theta)``, the gradient by backprop through :meth:`_forward`."""
        p = self.layout.split(theta)
        out, hs, zs = self._forward(theta, x)
        g = 2 * (out - y) / out.size  # d mean((out - y)^2) / d out
        grads = {}
        for i in reversed(range(len(self.layers))):
            w, b = self.layers[i]
            grads[w], grads[b] = g.T @ hs[i], g.sum(0)
            if i:
                g = (g @ p[w]) * self.act_grad(zs[i - 1])
        return theta - self.rates * self.layout.flatten(grads), float(((out - y) ** 2).mean())

    def adapt(self, theta: np.ndarray | None, xs: Samples, ys: Samples, steps: int, guard: bool
              ) -> tuple[np.ndarray, int]:
        x, y = xs.standard, ys.standard
        start = self.theta0 if theta is None else theta
        result, kept = guarded_steps(lambda t: self._step(t, x, y),
                                     lambda t: float(((self._forward(t, x)[0] - y) ** 2).mean()), start, steps, guard)
        return (result.copy() if result is start else result), kept

    def outputs(self, theta: np.ndarray, x: Samples) -> np.ndarray:
        return self._forward(theta, x.standard)[0]


register_backend("numpy-mlp", NumpyMLPBackend)
