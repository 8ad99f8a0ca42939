"""The ``onnxruntime`` backend: the bundle's ONNX graphs in ONNX Runtime sessions (the only place it is imported).

Solvers: ``sgd`` steps through ``adapt_step.onnx`` (the default step count through the unrolled
``adapt_steps.onnx`` in one call; adapting and predicting together through ``adapt_predict.onnx``, one call, where
the bundle has it), ``gauss-newton`` solves the damped normal equations in float64 on
``gauss_newton.onnx``'s Jacobian, ``prototypes`` averages the embeddings of ``forward.onnx`` per class. Everything
takes standardised samples (``Samples.standard``).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..manifest import GRAPH_ROLES
from .base import Plan, Samples, guarded_steps, kept_steps

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..bundle import Bundle


def session(path: Path, plan: Plan | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session with the plan's execution providers (CPU by default) and threads."""
    # imported here: a device using only the native backend needs no onnxruntime (less memory, fewer wheels)
    import onnxruntime as ort

    plan = plan or Plan("onnxruntime", "")
    options = ort.SessionOptions()
    options.intra_op_num_threads = plan.threads  # small graphs: one thread is fastest and predictable on a device
    options.log_severity_level = 3
    for opts in plan.provider_options:  # e.g. the TensorRT provider's engine cache directory must exist
        if opts.get("trt_engine_cache_path"):
            Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    return ort.InferenceSession(str(path), options, providers=list(zip(plan.providers, plan.provider_options)))


def _input_names(session: Any) -> set[str]:
    """The names of the inputs a session takes (an ONNX Runtime session, or an engine listing its ``inputs``)."""
    return {i.name for i in session.get_inputs()} if hasattr(session, "get_inputs") else set(session.inputs)


class BoundSession:
    """An ONNX Runtime session run through I/O binding, with the inputs that rarely change bound once.

    ``defaults`` (e.g. the rates and ``theta0``) are turned into ``OrtValue`` s once and stay bound; a call binds
    only the arrays it passes (the support and the queries: no per-call conversion of the constants), and a
    default replaced by one call is bound again on the next call that does not pass it. One binding per thread,
    so a backend may serve several threads as a plain session does.
    """

    def __init__(self, session: ort.InferenceSession, defaults: dict[str, np.ndarray]) -> None:
        import onnxruntime as ort

        self._session = session
        self._defaults = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in defaults.items()}
        self._outputs = [o.name for o in session.get_outputs()]
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs (new arrays, in graph order) for ``feeds`` plus the defaults they do not replace."""
        local = self._local
        binding = getattr(local, "binding", None)
        if binding is None:
            binding = local.binding = self._session.io_binding()
            local.replaced = set(self._defaults)
            for name in self._outputs:
                binding.bind_output(name, "cpu")
        replaced = local.replaced
        for name in [n for n in replaced if n not in feeds]:
            binding.bind_ortvalue_input(name, self._defaults[name])
            replaced.discard(name)
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
            if name in self._defaults:
                replaced.add(name)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


class OnnxRuntimeBackend:
    """Sessions by graph role (``forward``, ``adapt_step``, ``adapt_steps``, ``gauss_newton``; absent: None) and
    the solvers that drive them. Any object with ``run(None, feeds) -> [outputs]`` serves as a session (the
    ``tensorrt`` backend passes its engines)."""

    physical_outputs: ClassVar[bool] = False

    def __init__(self, bundle: Bundle, sessions: dict[str, Any], theta0: np.ndarray, rates: np.ndarray) -> None:
        m = bundle.manifest
        self._forward, self._step, self._steps, self._gauss_newton, self._fused = (
            sessions.get(r) for r in GRAPH_ROLES)
        self._layout = m.adaptation.layout
        self._solver = m.adaptation.solver
        self._classification = m.classification
        self._default_steps = m.adaptation.inner_steps
        self._out_dim = m.output.dim
        self._theta0 = theta0
        # per-call constants, prepared once (a device's hot path); a rate the export made a constant of the graphs
        # (one value throughout its tensor) is not among a graph's inputs
        rates_by_name = self._layout.split(rates, "rate.")

        def taken(s: Any) -> dict[str, np.ndarray]:
            names = _input_names(s) if s is not None else set()
            return {k: v for k, v in rates_by_name.items() if k in names}

        self._step_rates, self._steps_rates, fused_rates = (taken(s) for s in (self._step, self._steps, self._fused))
        # the fused graph through I/O binding with theta0 and the rates bound once (ONNX Runtime sessions only)
        fused = self._fused
        self._fused = (BoundSession(fused, {**self._layout.split(theta0, "theta."), **fused_rates})
                       if fused is not None and hasattr(fused, "io_binding") else None)
        if self._solver == "gauss-newton":
            self._damping = np.exp(rates.astype(np.float64)) + m.adaptation.min_damping

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def reason(cls) -> str:
        return "onnxruntime is not installed (pip install 'metaedge[runtime]')"

    @classmethod
    def unsupported(cls, bundle: Bundle) -> str | None:
        if bundle.manifest.has_graphs:
            return None
        return (f"{bundle.path} holds no ONNX graphs (exported with --format c); load it with backend='native' or "
                "re-export with --format all")

    @classmethod
    def open(cls, bundle: Bundle, plan: Plan, theta0: np.ndarray, rates: np.ndarray) -> OnnxRuntimeBackend:
        graphs = bundle.manifest.graphs.files()
        return cls(bundle, {role: session(bundle.file(name), plan) for role, name in graphs.items()}, theta0, rates)

    # --- adaptation --------------------------------------------------------------------------------------------
    def adapt(self, theta: np.ndarray | None, xs: Samples, ys: Samples, steps: int, guard: bool
              ) -> tuple[np.ndarray, int]:
        x, y = xs.standard, ys.standard
        if self._solver == "prototypes":
            z = self._embed(x)
            protos = np.stack([z[y == c].mean(0) for c in range(int(y.max()) + 1)]).astype(np.float32)
            return protos.ravel(), 0
        start = self._theta0 if theta is None else theta
        if steps and self._steps is not None and steps == self._default_steps:
            return self._unrolled(x, y, steps, start, guard)
        step = self._gauss_newton_step(x, y) if self._solver == "gauss-newton" else self._gradient_step(x, y)
        theta, kept = guarded_steps(step, lambda t: self._support_loss(t, x, y), start, steps, guard)
        return (theta.copy() if theta is start else theta), kept

    def adapt_outputs(self, theta: np.ndarray | None, xs: Samples, ys: Samples, x: Samples, steps: int,
                      guard: bool) -> tuple[np.ndarray, int, np.ndarray]:
        """:meth:`adapt` then :meth:`outputs` at the adapted state for ``x``: one run of ``adapt_predict.onnx``
        where the bundle has it and ``steps`` is its step count (where the guard rolls back, the kept state comes
        from the graph's history and one forward run predicts); otherwise :meth:`adapt` + :meth:`outputs`."""
        if self._fused is None or not steps or steps != self._default_steps:
            theta, kept = self.adapt(theta, xs, ys, steps, guard)
            return theta, kept, self.outputs(theta, x)
        feeds = {"xs": xs.standard, "ys": ys.standard, "xq": x.standard}
        if theta is not None:
            feeds.update(self._layout.split(theta, "theta."))
        out = self._fused.run(feeds)
        kept = kept_steps(out[-1], steps, guard)
        if not kept:
            start = self._theta0 if theta is None else theta
            return start.copy(), 0, self.outputs(start, x)
        adapted = np.concatenate([h[kept - 1].ravel() for h in out[1:-1]])
        return adapted, kept, (out[0] if kept == steps else self.outputs(adapted, x))

    def _gradient_step(self, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, float]]:
        """``theta -> (theta - rates * grad, support loss at theta)`` through ``adapt_step.onnx``."""

        def step(t: np.ndarray) -> tuple[np.ndarray, float]:
            out = self._step.run(None, {"xs": x, "ys": y, **self._layout.split(t, "theta."), **self._step_rates})
            return np.concatenate([o.ravel() for o in out[:-1]]), float(out[-1])

        return step

    def _gauss_newton_step(self, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, float]]:
        """``theta -> (damped Gauss-Newton update, support loss at theta)``: the graph gives the Jacobian and the
        residuals, the solve ``(J^T J + diag(exp(rates) + min_damping)) delta = J^T r`` runs here in float64
        (the normal equations square the condition number)."""

        def step(t: np.ndarray) -> tuple[np.ndarray, float]:
            jac, res = self._gauss_newton.run(None, {"xs": x, "ys": y, **self._layout.split(t, "theta.")})
            j, r = jac.astype(np.float64), res.astype(np.float64)
            delta = np.linalg.solve(j.T @ j + np.diag(self._damping), j.T @ r)
            return (t - delta).astype(np.float32), float((r**2).mean())

        return step

    def _unrolled(self, x: np.ndarray, y: np.ndarray, steps: int, start: np.ndarray, guard: bool
                  ) -> tuple[np.ndarray, int]:
        """All steps in one graph call; the guard keeps the steps up to the first that raised the support loss."""
        out = self._steps.run(None, {"xs": x, "ys": y, **self._layout.split(start, "theta."), **self._steps_rates})
        history, losses = out[:-1], out[-1]  # (K, *shape) per parameter; (K + 1,) support losses
        kept = kept_steps(losses, steps, guard)
        theta = np.concatenate([h[kept - 1].ravel() for h in history]).astype(np.float32) if kept else start.copy()
        return theta, kept

    def _support_loss(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        pred = self._forward.run(None, {"x": x, **self._layout.split(theta, "theta.")})[0]
        if self._classification:  # softmax cross-entropy, as in the graph
            z = pred - pred.max(1, keepdims=True)
            return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean())
        return float(((pred - y) ** 2).mean())

    def jacobian(self, theta: np.ndarray, x: Samples) -> np.ndarray | None:
        """``d outputs / d theta`` ``(n, out, P)`` (standardised outputs) from ``gauss_newton.onnx`` (Gauss-Newton
        bundles; None for others: the caller differentiates numerically)."""
        if self._gauss_newton is None:
            return None
        n = len(x.standard)
        zeros = np.zeros((n, self._out_dim), np.float32)
        jac, _ = self._gauss_newton.run(None, {"xs": x.standard, "ys": zeros, **self._layout.split(theta, "theta.")})
        return jac.reshape(n, self._out_dim, -1).astype(np.float64)

    # --- prediction --------------------------------------------------------------------------------------------
    def _embed(self, x: np.ndarray) -> np.ndarray:
        return self._forward.run(None, {"x": x})[0]

    def outputs(self, theta: np.ndarray, x: Samples) -> np.ndarray:
        if self._solver == "prototypes":  # logits: minus squared Euclidean distance to each prototype
            z = self._embed(x.standard)
            protos = theta.reshape(-1, z.shape[1])
            return -((z[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
        return self._forward.run(None, {"x": x.standard, **self._layout.split(theta, "theta.")})[0]
