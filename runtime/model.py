"""On-device adaptation and prediction with numpy + ONNX Runtime, the C library or TensorRT (never torch, onnx or
metaedge.sdk).

``Model.load(bundle, device="auto")`` verifies the bundle, checks that it fits the device profile
(:mod:`metaedge.devices`) and picks the profile's first usable backend (on CPUs the C library where the bundle has
``model.mebin``, else ONNX Runtime, which is then the only place ``onnxruntime`` is imported);
``model.adapt(xs, ys, steps)`` runs the exported adapt-step graph (or the C library) with guards (bad support
data is refused with one sentence; a step that raises the support loss is rolled back); ``adapted.predict(x)``
runs the forward graph; ``adapted.save(path)`` writes the adapted state atomically (temp file, fsync, rename), so
a power cut leaves the old state or the new one.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnxruntime as ort

import numpy as np

from .bundle import Bundle, BundleError
from .manifest import Layout

#: what ``Model.load(backend=...)`` accepts
BACKENDS = ("auto", "onnxruntime", "native", "tensorrt")
_log = logging.getLogger("metaedge.runtime")


def _bad_rows(a: np.ndarray) -> str:
    """1-based numbers of the samples (rows) of ``a`` holding non-finite values, e.g. ``"2, 5"``."""
    rows = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(1)) + 1
    return ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")


@dataclass
class _Plan:
    """Which backend :meth:`Model.load` uses, with what, and why (one line for the log)."""

    backend: str
    reason: str
    device: str | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: tuple[dict, ...] = ({},)
    threads: int = 1


def _plan(bundle: Bundle, backend: str, device: str) -> _Plan:
    """Resolve ``device`` (``auto``: detect this machine) to a profile, check that the bundle fits it, and pick the
    profile's first backend that is installed and can run the bundle (or check the requested one)."""
    from ..devices import ProfileError, check_fits, choose_backend, resolve_device
    from .backends import available_backends

    m = bundle.manifest
    try:
        profile, found = resolve_device(device)
    except ProfileError:
        if device != "auto":
            raise
        profile, found = None, None  # an unprofiled machine (e.g. a laptop): generic CPU choice below
    if profile is not None:
        check_fits(profile, m)
        where = f"device {profile.name}" + (f", detected from {found.reason}" if found else "")
        choice = choose_backend(profile, m, available_backends(import_onnxruntime=False))
        if choice.backend == "onnxruntime" or backend == "onnxruntime":  # the real provider list needs the import
            choice = choose_backend(profile, m, available_backends())
        if backend in ("auto", choice.backend):
            return _Plan(choice.backend, f"{where}; {choice.reason}", profile.name, choice.providers,
                         choice.provider_options, choice.threads)
    else:
        where = "no device profile matches this machine"
    return _Plan(*_generic(bundle, backend, where), device=profile.name if profile else None)


def _generic(bundle: Bundle, backend: str, where: str) -> tuple[str, str]:
    """A requested backend, or without a device profile: the C library where it can run the bundle, else ONNX
    Runtime on the CPU. Raises with one sentence when the requested one cannot run this bundle here."""
    mebin = bundle.manifest.has_mebin
    has_graphs = bundle.manifest.has_graphs
    if backend == "tensorrt":
        return "tensorrt", f"{where}; requested"
    if backend == "onnxruntime" or (backend == "auto" and not mebin):
        if not has_graphs:
            raise BundleError(f"{bundle.path} holds no ONNX graphs (exported with --format c); load it with "
                              "backend='native' or re-export with --format all")
        return "onnxruntime", f"{where}; {'requested' if backend == 'onnxruntime' else 'the bundle has no model.mebin'}"
    if not mebin:
        raise BundleError(f"{bundle.path} has no model.mebin for the native backend; re-export it with --format c "
                          "or all (MLP models)")
    from . import native

    if not native.available():
        if backend == "native" or not has_graphs:
            raise BundleError(f"the native C library is not available here ({native.unavailable_reason()}); "
                              "reinstall metaedge with its C build or use backend='onnxruntime'")
        return "onnxruntime", f"{where}; the native C library is not available ({native.unavailable_reason()})"
    return "native", f"{where}; {'requested' if backend == 'native' else 'the bundle has model.mebin'}"


def _session(path: Path, plan: _Plan | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session with the plan's execution providers (CPU by default) and threads."""
    # imported here: a device using only the native backend needs no onnxruntime (less memory, fewer wheels)
    import onnxruntime as ort

    plan = plan or _Plan("onnxruntime", "")
    options = ort.SessionOptions()
    options.intra_op_num_threads = plan.threads  # small graphs: one thread is fastest and predictable on a device
    options.log_severity_level = 3
    for opts in plan.provider_options:  # e.g. the TensorRT provider's engine cache directory must exist
        if opts.get("trt_engine_cache_path"):
            Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    return ort.InferenceSession(str(path), options, providers=list(zip(plan.providers, plan.provider_options)))


@dataclass
class Model:
    """A loaded bundle: meta-learned initial parameters, rates and the two graphs."""

    bundle: Bundle
    theta0: np.ndarray
    rates: np.ndarray
    guard: bool = True
    _forward: ort.InferenceSession | None = field(default=None, repr=False)
    _step: ort.InferenceSession | None = field(default=None, repr=False)
    _steps: ort.InferenceSession | None = field(default=None, repr=False)
    _gauss_newton: ort.InferenceSession | None = field(default=None, repr=False)
    #: the C library's model (``backend == "native"``), else None
    _native: Any = field(default=None, repr=False)
    backend: str = "onnxruntime"
    #: the device profile the bundle was checked against (None on a machine no profile matches)
    device: str | None = None

    def __post_init__(self) -> None:
        # per-call constants, prepared once: adapting is a hot path on a device
        m = self.bundle.manifest
        self._shape = m.input.shape
        norm = m.normalization
        self._norm = {k: np.asarray(getattr(norm, k), np.float32) for k in ("x_mean", "x_std", "y_mean", "y_std")}
        self._rate_feeds = self._split(self.rates, "rate")

    @classmethod
    def load(cls, path: str | Path, guard: bool = True, backend: str = "auto", device: str = "auto") -> Model:
        """Open and verify the bundle at ``path`` for ``device`` and pick a backend.

        ``device``: a profile name of :mod:`metaedge.devices` (``metaedge devices`` lists them) or ``auto`` (this
        machine, detected); a bundle that exceeds the device's memory budget or that none of its backends can run
        is refused with one sentence. ``backend``: ``auto`` (the device's first backend that is installed and can
        run the bundle: on CPUs the C library where the bundle has ``model.mebin``, else ONNX Runtime; TensorRT
        first on Jetsons), or ``native``, ``onnxruntime``, ``tensorrt``. The choice and its reason are logged as
        one line on the ``metaedge.runtime`` logger.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        bundle = Bundle.open(path)
        m = bundle.manifest
        theta0, rates = bundle.array("theta0.npy"), bundle.array("rates.npy")
        size = m.adaptation.size
        if theta0.shape != (size,) or rates.shape != (size,):
            raise BundleError(f"{path}: theta0/rates hold {theta0.shape}/{rates.shape} values, the manifest says "
                              f"{size}; re-export the bundle")
        plan = _plan(bundle, backend, device)
        providers = f" [{', '.join(plan.providers)}]" if plan.backend == "onnxruntime" else ""
        _log.info("metaedge runtime: %s backend%s for %s (%s)", plan.backend, providers, path, plan.reason)
        model = cls(bundle, theta0.astype(np.float32), rates.astype(np.float32), guard, backend=plan.backend,
                    device=plan.device)
        graphs = m.graphs.files()
        roles = ("forward", "adapt_step", "adapt_steps", "gauss_newton")
        if plan.backend == "native":
            from .native import NativeModel

            model._native = NativeModel(bundle.file(m.firmware.mebin).read_bytes())
        elif plan.backend == "tensorrt":
            from .tensorrt_backend import load_sessions

            sessions = load_sessions(bundle, plan.device)
            # a graph TensorRT could not build an engine for (e.g. the adapt step) runs on ONNX Runtime's CPU side
            model._forward, model._step, model._steps, model._gauss_newton = (
                sessions.get(r) or (_session(bundle.file(graphs[r])) if r in graphs else None) for r in roles)
        else:  # prototype bundles have no step graph; the unrolled one holds the default step count, where exported
            model._forward, model._step, model._steps, model._gauss_newton = (
                _session(bundle.file(graphs[r]), plan) if r in graphs else None for r in roles)
        return model

    # --- layout and normalisation --------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        """Where each adapted parameter lies in ``theta`` ``(P,)``."""
        return self.bundle.manifest.adaptation.layout

    def _split(self, flat: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
        return self.layout.split(flat, f"{prefix}.")

    def _inputs(self, x: np.ndarray, what: str) -> np.ndarray:
        """Check and standardise inputs ``(n, *input_shape)``."""
        shape = self._shape
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(shape):
            x = x[None]
        if x.shape[1:] != shape or x.shape[0] == 0:
            raise ValueError(f"{what} must have shape (n, {', '.join(map(str, shape))}) with n >= 1, got {x.shape}; "
                             f"inputs are {', '.join(self.bundle.manifest.input.names)}")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} hold NaN or infinite values (sample(s) {_bad_rows(x)}); remove those samples "
                             "and retry")
        return (x - self._norm["x_mean"]) / self._norm["x_std"] if x.ndim == 2 else x

    @property
    def classification(self) -> bool:
        return self.bundle.manifest.classification

    def _targets(self, y: np.ndarray, n: int) -> np.ndarray:
        dim = self.bundle.manifest.output.dim
        if self.classification:  # integer labels 0..ways-1, one per support sample
            labels = np.asarray(y).reshape(-1)
            if labels.size != n or not np.all(np.isfinite(labels.astype(np.float64))):
                raise ValueError(f"support labels must be one finite class number for each of the {n} samples")
            top = np.inf if self.prototypes else dim - 1  # prototypes take any number of classes
            if (labels != np.round(labels)).any() or labels.min() < 0 or labels.max() > top:
                raise ValueError(f"support labels must be integers in 0..{'ways-1' if self.prototypes else top}; "
                                 "relabel the classes")
            return labels.astype(np.int64)
        y = np.asarray(y, dtype=np.float32).reshape(n, -1) if np.size(y) == n * dim else None
        if y is None:
            raise ValueError(f"support targets must hold {dim} value(s) for each of the {n} support samples")
        if not np.isfinite(y).all():
            raise ValueError(f"support targets hold NaN or infinite values (sample(s) {_bad_rows(y)}); remove those "
                             "samples and retry")
        return (y - self._norm["y_mean"]) / self._norm["y_std"]

    @property
    def prototypes(self) -> bool:
        """Prototype bundles (ProtoNets): adaptation is the class means of the support embeddings."""
        return self.bundle.manifest.adaptation.prototypes

    def _physical(self, x: np.ndarray) -> np.ndarray:
        """Inputs already checked by :meth:`_inputs`, as float32 ``(n, *input_shape)`` in physical units."""
        x = np.asarray(x, dtype=np.float32)
        return x[None] if x.ndim == len(self._shape) else x

    def _embed(self, x: np.ndarray) -> np.ndarray:
        return self._forward.run(None, {"x": x})[0]

    # --- adaptation ---------------------------------------------------------------------------------------
    def adapt(self, xs: np.ndarray, ys: np.ndarray, steps: int | None = None, start: np.ndarray | None = None
              ) -> Adapted:
        """Adapt on a support set ``xs`` ``(k, *input_shape)``, ``ys`` ``(k, out)`` in physical units (or labels).

        ``start`` (default: the meta-learned ``theta0``) continues from an earlier adapted state's ``theta``
        ``(P,)``, e.g. when a unit gets more reference points later.
        """
        steps = self.bundle.manifest.adaptation.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        x = self._inputs(xs, "support inputs")
        y = self._targets(ys, len(x))
        if self.prototypes:
            ways = int(y.max()) + 1
            missing = sorted(set(range(ways)) - set(y.tolist()))
            if missing:
                raise ValueError(f"support has no sample of class(es) {missing}; give every class at least one")
            if self._native is not None:
                return Adapted(self, self._native.adapt(self._physical(xs), y)[0], steps_run=0, steps_kept=0)
            z = self._embed(x)
            protos = np.stack([z[y == c].mean(0) for c in range(ways)]).astype(np.float32)
            return Adapted(self, protos.ravel(), steps_run=0, steps_kept=0)
        if start is not None and (np.shape(start) != self.theta0.shape or not np.isfinite(start).all()):
            raise ValueError(f"start must be a finite adapted state of {self.theta0.size} values, got shape "
                             f"{np.shape(start)}; pass an Adapted.theta of this bundle")
        if self._native is not None:  # the C library takes physical units and applies the same guard
            targets = y if self.classification else np.asarray(ys, np.float32)
            options = {"start": np.asarray(start, np.float32)} if start is not None else {}
            theta, kept = self._native.adapt(self._physical(xs), targets, steps=steps, guard=self.guard, **options)
            return Adapted(self, theta, steps_run=steps, steps_kept=kept)
        start = self.theta0 if start is None else np.asarray(start, np.float32)
        rates = self._rate_feeds
        if steps and self._steps is not None and steps == self.bundle.manifest.adaptation.inner_steps:
            return self._adapt_unrolled(x, y, rates, steps, start)
        step = self._gauss_newton_step(x, y) if self._gauss_newton is not None else self._gradient_step(x, y, rates)
        theta, kept = start.copy(), 0
        nxt = step(theta) if steps else None
        for i in range(steps):
            new, loss = nxt  # the step from `theta`, and the support loss at `theta`
            last = i == steps - 1
            if not last or self.guard:
                # the next step's graph also reports the support loss at `new`: the guard reuses it, so only
                # the final step costs an extra forward
                nxt = step(new) if not last else None
                after = nxt[1] if not last else self._support_loss(new, x, y)
                if self.guard and (not np.isfinite(after) or after > loss):
                    break  # rolled back; later steps would start from the same point and be rejected too
            theta, kept = new, kept + 1
        return Adapted(self, theta, steps_run=steps, steps_kept=kept)

    def _gradient_step(self, x: np.ndarray, y: np.ndarray, rates: dict) -> Callable[[np.ndarray], tuple]:
        """``theta -> (theta - rates * grad, support loss at theta)`` through ``adapt_step.onnx``."""

        def step(t: np.ndarray) -> tuple[np.ndarray, float]:
            out = self._step.run(None, {"xs": x, "ys": y, **self._split(t, "theta"), **rates})
            return np.concatenate([o.ravel() for o in out[:-1]]), float(out[-1])

        return step

    def _gauss_newton_step(self, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple]:
        """``theta -> (damped Gauss-Newton update, support loss at theta)``: the graph gives the Jacobian and the
        residuals, the solve ``(J^T J + diag(exp(rates) + min_damping)) delta = J^T r`` runs here in float64
        (the normal equations square the condition number)."""
        damping = np.exp(self.rates.astype(np.float64)) + self.bundle.manifest.adaptation.min_damping

        def step(t: np.ndarray) -> tuple[np.ndarray, float]:
            jac, res = self._gauss_newton.run(None, {"xs": x, "ys": y, **self._split(t, "theta")})
            j, r = jac.astype(np.float64), res.astype(np.float64)
            delta = np.linalg.solve(j.T @ j + np.diag(damping), j.T @ r)
            return (t - delta).astype(np.float32), float((r**2).mean())

        return step

    def _adapt_unrolled(self, x: np.ndarray, y: np.ndarray, rates: dict, steps: int, start: np.ndarray) -> Adapted:
        """All steps in one graph call; the guard keeps the steps up to the first that raised the support loss."""
        out = self._steps.run(None, {"xs": x, "ys": y, **self._split(start, "theta"), **rates})
        history, losses = out[:-1], out[-1]  # (K, *shape) per parameter; (K + 1,) support losses
        kept = steps
        if self.guard:  # keep the steps before the first one that raised the support loss (or made it non-finite)
            worse = ~(np.isfinite(losses[1:]) & (losses[1:] <= losses[:-1]))
            kept = int(worse.argmax()) if worse.any() else steps
        theta = np.concatenate([h[kept - 1].ravel() for h in history]).astype(np.float32) if kept else start.copy()
        return Adapted(self, theta, steps_run=steps, steps_kept=kept)

    def _support_loss(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        pred = self._forward.run(None, {"x": x, **self._split(theta, "theta")})[0]
        if self.classification:  # softmax cross-entropy, as in the graph
            z = pred - pred.max(1, keepdims=True)
            return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean())
        return float(((pred - y) ** 2).mean())

    def _raw(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self._native is not None:
            self._inputs(x, "inputs")  # the same checks and messages as the ONNX path
            out = self._native.outputs(theta, self._physical(x))
            return out if self.classification else (out - self._norm["y_mean"]) / self._norm["y_std"]
        if self.prototypes:  # logits: minus squared Euclidean distance to each prototype
            z = self._embed(self._inputs(x, "inputs"))
            protos = theta.reshape(-1, z.shape[1])
            return -((z[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
        return self._forward.run(None, {"x": self._inputs(x, "inputs"), **self._split(theta, "theta")})[0]

    def _predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self._native is not None:
            self._inputs(x, "inputs")
            return self._native.predict(theta, self._physical(x))
        y = self._raw(theta, x)
        if self.classification:
            return y.argmax(1)
        return y * self._norm["y_std"] + self._norm["y_mean"]


@dataclass
class Adapted:
    """A model adapted to one unit: its flat parameter vector and how many steps were kept."""

    model: Model
    theta: np.ndarray
    steps_run: int = 0
    steps_kept: int = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Regression: predictions ``(n, out)`` in physical units; classification: labels ``(n,)``."""
        return self.model._predict(self.theta, x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs ``(n, out)`` (standardised for regression, logits for classification)."""
        return self.model._raw(self.theta, x)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Classification: softmax class probabilities ``(n, ways)``."""
        z = self.logits(x)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def save(self, path: str | Path) -> None:
        """Write the adapted state atomically (temp file, fsync, rename) as ``.npz`` (no pickle)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, theta=self.theta, steps_kept=np.int64(self.steps_kept),
                         bundle_theta0_sha256=np.array(self.model.bundle.manifest.files["theta0.npy"]))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, model: Model, path: str | Path) -> Adapted:
        """Read a state written by :meth:`save` for this bundle."""
        try:
            with np.load(path, allow_pickle=False) as z:
                theta, kept, origin = z["theta"], int(z["steps_kept"]), str(z["bundle_theta0_sha256"])
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path} is not an adapted state written by metaedge; adapt again") from e
        dim = model.bundle.manifest.adaptation.embedding_dim or 0
        fits = theta.size % dim == 0 if model.prototypes else theta.shape == model.theta0.shape
        if origin != model.bundle.manifest.files["theta0.npy"] or not fits:
            raise ValueError(f"{path} was adapted from a different bundle; adapt again with this bundle")
        return cls(model, theta.astype(np.float32), steps_kept=kept)
