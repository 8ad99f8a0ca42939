"""On-device adaptation and prediction with numpy + ONNX Runtime, the C library, TensorRT or any registered backend
(never torch, onnx or metaedge.sdk).

``Model.load(bundle, device="auto")`` verifies the bundle, checks that it fits the device profile
(:mod:`metaedge.devices`) and picks the profile's first usable backend (on CPUs the C library where the bundle has
``model.mebin``, else ONNX Runtime, which is then the only place ``onnxruntime`` is imported);
``model.adapt(xs, ys, steps)`` checks and standardises the support set and has the backend adapt (bad support
data is refused with one sentence; with the guard a step that raises the support loss is rolled back);
``adapted.predict(x)`` runs the forward pass; ``adapted.save(path)`` writes the adapted state atomically (temp
file, fsync, rename), so a power cut leaves the old state or the new one.

Journaling (:mod:`.journal`, ``docs/journal.md``): ``model.adapt(xs, ys, journal="j.db", unit="A17",
save="a17.state")`` saves the state first and then appends one ``AdaptationRecord`` whose ``state_sha256`` is the
digest of the file just written (a record never names a state that does not exist); ``adapted.check(x, reference,
journal=..., unit=...)`` appends a ``CheckRecord`` of in-service readings beside the predictions.

The backends (:mod:`metaedge.runtime.backends`) only run graphs or the C library; validation, normalisation and
the guard flag stay here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .signing import TrustedKey

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import InputError
from .backends import Backend, Plan, Samples, backend_names, get_backend
from .bundle import Bundle, BundleError
from .intervals import (
    Interval,
    Suggestion,
    conformal_spread,
    farthest_candidate,
    multiplier,
    plan_design,
    posterior_covariance,
    posterior_spread,
    variance_reduction,
)
from .journal import append, as_rows, file_sha256, host_id, new_record_id, unit_id, utc_now
from .journal_records import AdaptationRecord, BundleRef, CheckRecord, DeviceInfo
from .manifest import Layout, Uncertainty
from .state import BundleIdentity, StateFile, read_state

_log = logging.getLogger("metaedge.runtime")


def backend_choices() -> tuple[str, ...]:
    """What ``Model.load(backend=...)`` accepts: ``auto`` and every registered backend."""
    return ("auto", *backend_names())


def _bad_rows(a: np.ndarray) -> str:
    """1-based numbers of the samples (rows) of ``a`` holding non-finite values, e.g. ``"2, 5"``."""
    rows = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(1)) + 1
    return ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")


def _plan(bundle: Bundle, backend: str, device: str) -> Plan:
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
            return Plan(choice.backend, f"{where}; {choice.reason}", profile.name, choice.providers,
                        choice.provider_options, choice.threads)
    else:
        where = "no device profile matches this machine"
    return Plan(*_generic(bundle, backend, where), device=profile.name if profile else None)


def _generic(bundle: Bundle, backend: str, where: str) -> tuple[str, str]:
    """A requested backend, or without a device profile: the C library where it can run the bundle, else ONNX
    Runtime on the CPU. Raises with one sentence when the requested one cannot run this bundle here."""
    if backend != "auto":
        chosen = get_backend(backend)
        problem = chosen.unsupported(bundle)
        if problem:
            raise BundleError(problem)
        if not chosen.available():
            others = ", ".join(n for n in backend_choices() if n != backend)
            raise BundleError(f"{chosen.reason()}; install it or choose another backend ({others})")
        return backend, f"{where}; requested"
    native, onnx = get_backend("native"), get_backend("onnxruntime")
    if native.unsupported(bundle) is None and native.available():
        return "native", f"{where}; the bundle has model.mebin"
    if onnx.unsupported(bundle) is None:
        why = native.reason() if bundle.manifest.has_mebin else "the bundle has no model.mebin"
        return "onnxruntime", f"{where}; {why}"
    raise BundleError(f"{native.reason()}; reinstall metaedge with its C build, or re-export the bundle with "
                      "--format all for ONNX Runtime")


@dataclass
class Model:
    """A loaded bundle: meta-learned initial parameters, rates, and the backend that runs it."""

    bundle: Bundle
    theta0: np.ndarray
    rates: np.ndarray
    #: the backend that runs the bundle, and its registered name (``Model.load`` picks it)
    runner: Backend = field(repr=False)
    backend: str
    guard: bool = True
    #: the device profile the bundle was checked against (None on a machine no profile matches)
    device: str | None = None

    def __post_init__(self) -> None:
        # per-call constants, prepared once: adapting is a hot path on a device
        m = self.bundle.manifest
        self._shape = m.input.shape
        norm = m.normalization
        self._x_mean, self._x_std, self._y_mean, self._y_std = (
            np.asarray(v, np.float32) for v in (norm.x_mean, norm.x_std, norm.y_mean, norm.y_std))
        self._physical_outputs = self.runner.physical_outputs

    @classmethod
    def load(cls, path: str | Path, guard: bool = True, backend: str = "auto", device: str = "auto",
             trust: Iterable[str | Path | TrustedKey] | None = None) -> Model:
        """Open and verify the bundle at ``path`` for ``device`` and pick a backend.

        ``device``: a profile name of :mod:`metaedge.devices` (``metaedge devices`` lists them) or ``auto`` (this
        machine, detected); a bundle that exceeds the device's memory budget or that none of its backends can run
        is refused with one sentence. ``backend``: ``auto`` (the device's first backend that is installed and can
        run the bundle: on CPUs the C library where the bundle has ``model.mebin``, else ONNX Runtime; TensorRT
        first on Jetsons), or a registered name (:func:`backend_choices`: ``native``, ``onnxruntime``,
        ``tensorrt``, and any added with ``register_backend``). The choice and its reason are logged as one line
        on the ``metaedge.runtime`` logger. ``trust``: public keys the bundle must be signed by (None: those in
        ``METAEDGE_TRUST``), as for :meth:`Bundle.open`.
        """
        if backend != "auto":
            get_backend(backend)  # an unknown name is refused before any file is read
        bundle = Bundle.open(path, trust=trust)
        theta0, rates = bundle.array("theta0.npy"), bundle.array("rates.npy")
        size = bundle.manifest.adaptation.size
        if theta0.shape != (size,) or rates.shape != (size,):
            raise BundleError(f"{path}: theta0/rates hold {theta0.shape}/{rates.shape} values, the manifest says "
                              f"{size}; re-export the bundle")
        plan = _plan(bundle, backend, device)
        providers = f" [{', '.join(plan.providers)}]" if plan.backend == "onnxruntime" else ""
        _log.info("metaedge runtime: %s backend%s for %s (%s)", plan.backend, providers, path, plan.reason)
        theta0, rates = theta0.astype(np.float32), rates.astype(np.float32)
        runner = get_backend(plan.backend).open(bundle, plan, theta0, rates)
        return cls(bundle, theta0, rates, runner, plan.backend, guard, plan.device)

    # --- layout and normalisation --------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        """Where each adapted parameter lies in ``theta`` ``(P,)``."""
        return self.bundle.manifest.adaptation.layout

    def _inputs(self, x: np.ndarray, what: str) -> Samples:
        """Check inputs ``(n, *input_shape)`` (one sample without the batch axis is taken too) and standardise
        them (vectors; images and series are fed as they are)."""
        shape = self._shape
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(shape):
            x = x[None]
        if x.shape[1:] != shape or x.shape[0] == 0:
            raise InputError(f"{what} must have shape (n, {', '.join(map(str, shape))}) with n >= 1, got {x.shape}; "
                             f"inputs are {', '.join(self.bundle.manifest.input.names)}")
        if not np.isfinite(x).all():
            raise InputError(f"{what} hold NaN or infinite values (sample(s) {_bad_rows(x)}); remove those samples "
                             "and retry")
        return Samples(x, (x - self._x_mean) / self._x_std if x.ndim == 2 else x)

    @property
    def classification(self) -> bool:
        return self.bundle.manifest.classification

    def _targets(self, y: np.ndarray, n: int) -> Samples:
        """Check support targets: ``(n, out)`` values (standardised too), or ``n`` class labels ``(n,)`` int64."""
        dim = self.bundle.manifest.output.dim
        if self.classification:  # integer labels 0..ways-1, one per support sample
            labels = np.asarray(y).reshape(-1)
            if labels.size != n or not np.all(np.isfinite(labels.astype(np.float64))):
                raise InputError(f"support labels must be one finite class number for each of the {n} samples")
            top = np.inf if self.prototypes else dim - 1  # prototypes take any number of classes
            if (labels != np.round(labels)).any() or labels.min() < 0 or labels.max() > top:
                raise InputError(f"support labels must be integers in 0..{'ways-1' if self.prototypes else top}; "
                                 "relabel the classes")
            labels = labels.astype(np.int64)
            return Samples(labels, labels)
        y = np.asarray(y, dtype=np.float32).reshape(n, -1) if np.size(y) == n * dim else None
        if y is None:
            raise InputError(f"support targets must hold {dim} value(s) for each of the {n} support samples")
        if not np.isfinite(y).all():
            raise InputError(f"support targets hold NaN or infinite values (sample(s) {_bad_rows(y)}); remove those "
                             "samples and retry")
        return Samples(y, (y - self._y_mean) / self._y_std)

    @property
    def prototypes(self) -> bool:
        """Prototype bundles (ProtoNets): adaptation is the class means of the support embeddings."""
        return self.bundle.manifest.adaptation.prototypes

    # --- adaptation ---------------------------------------------------------------------------------------
    def adapt(self, xs: np.ndarray, ys: np.ndarray, steps: int | None = None,
              start: np.ndarray | Adapted | None = None, *, journal: str | Path | None = None,
              unit: str | None = None, save: str | Path | None = None) -> Adapted:
        """Adapt on a support set ``xs`` ``(k, *input_shape)``, ``ys`` ``(k, out)`` in physical units (or labels).

        ``start`` (default: the meta-learned ``theta0``) continues from an earlier adapted state: its ``theta``
        ``(P,)``, or an :class:`Adapted` (e.g. ``Adapted.load(model, "old.state")``, whose file digest the journal
        record then names as ``start_state_sha256``), e.g. when a unit is recalibrated.
        ``save``: write the adapted state there (:meth:`Adapted.save`). ``journal`` (with ``unit``, the unit's id):
        append one adaptation record to that journal (:meth:`Adapted.journal`), after ``save`` so that the record
        carries the saved file's digest.
        The result keeps this support set for ``predict(x, interval=...)``, whose posterior is that of these
        points alone: pass every reference point taken so far.
        """
        if journal is not None:
            unit = unit_id(unit)  # checked before anything is written
        adapted, _ = self._adapt(xs, ys, steps, start, None)
        if save is not None:
            adapted.save(save)
        if journal is not None:
            adapted.journal(journal, unit)
        return adapted

    def adapt_predict(self, xs: np.ndarray, ys: np.ndarray, x: np.ndarray, steps: int | None = None,
                      start: np.ndarray | Adapted | None = None) -> tuple[Adapted, np.ndarray]:
        """``adapted = model.adapt(xs, ys, steps, start)`` and ``adapted.predict(x)`` (``x`` ``(n,
        *input_shape)``) in one backend call where the backend has one (ONNX Runtime with a bundle's
        ``adapt_predict.onnx``: one graph run for the default step count); returns ``(adapted, predictions)``,
        the same as the two calls. Save or journal the result with :meth:`Adapted.save` / :meth:`Adapted.journal`.
        """
        adapted, out = self._adapt(xs, ys, steps, start, self._inputs(x, "inputs"))
        return adapted, self._finish(out)

    def _adapt(self, xs: np.ndarray, ys: np.ndarray, steps: int | None, start: np.ndarray | Adapted | None,
               queries: Samples | None) -> tuple[Adapted, np.ndarray | None]:
        """The checked adaptation of :meth:`adapt`, and the backend's raw outputs at the result for ``queries``
        (None: none asked), through the backend's ``adapt_outputs`` where it has one."""
        steps = self.bundle.manifest.adaptation.inner_steps if steps is None else int(steps)
        if steps < 0:
            raise InputError(f"steps must be >= 0, got {steps}")
        x = self._inputs(xs, "support inputs")
        y = self._targets(ys, len(x.physical))
        out = None
        if self.prototypes:
            labels = y.physical
            missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
            if missing:
                raise InputError(f"support has no sample of class(es) {missing}; give every class at least one")
            theta, _ = self.runner.adapt(None, x, y, 0, self.guard)
            adapted = Adapted(self, theta, steps_run=0, steps_kept=0, support=Support(x, y, None))
        else:
            origin = start.state_sha256 if isinstance(start, Adapted) else None
            begin = start.theta if isinstance(start, Adapted) else start
            if begin is not None and (np.shape(begin) != self.theta0.shape or not np.isfinite(begin).all()):
                raise InputError(f"start must be a finite adapted state of {self.theta0.size} values, got shape "
                                 f"{np.shape(begin)}; pass an Adapted (or its theta) of this bundle")
            begin = None if begin is None else np.asarray(begin, np.float32)
            fused = getattr(self.runner, "adapt_outputs", None) if queries is not None else None
            if fused is not None:
                theta, kept, out = fused(begin, x, y, queries, steps, self.guard)
            else:
                theta, kept = self.runner.adapt(begin, x, y, steps, self.guard)
            adapted = Adapted(self, theta, steps_run=steps, steps_kept=kept,
                              support=Support(x, y, self.theta0 if begin is None else begin, origin))
        if queries is not None and out is None:
            out = self.runner.outputs(adapted.theta, queries)
        return adapted, out

    def support_loss(self, theta: np.ndarray, x: Samples, y: Samples) -> float:
        """The loss the guard compares, at ``theta``: regression: mean squared error over all support values in the
        bundle's standardised units (``(y - y_mean) / y_std``, so outputs of any scale weigh alike); classification:
        mean softmax cross-entropy. Float64 arithmetic on the backend's float32 outputs."""
        out = np.asarray(self.runner.outputs(theta, x), np.float64)
        if self.classification:
            z = out - out.max(1, keepdims=True)
            lse = np.log(np.exp(z).sum(1))
            return float(np.mean(lse - z[np.arange(len(z)), y.standard]))
        if self._physical_outputs:
            out = (out - self._y_mean) / self._y_std
        return float(np.mean((out - y.standard) ** 2))

    @cached_property
    def identity(self) -> BundleIdentity:
        """What this bundle's saved states carry (manifest sha256, model CRC, theta0 sha256), hashed once: the
        bundle was verified when it was loaded, and its files do not change under a loaded model."""
        return BundleIdentity.of(self.bundle.path, self.bundle.manifest.files["theta0.npy"])

    def bundle_ref(self) -> BundleRef:
        """The bundle's identity in journal records: sha256 hex of ``manifest.json`` and the key id its
        ``manifest.sig`` names (None when unsigned)."""
        from .signing import signing_key_id

        return BundleRef(self.identity.manifest_sha256.hex(), signing_key_id(self.bundle.path))

    def device_info(self) -> DeviceInfo:
        """Where records are made: this model's device profile and :func:`~.journal.host_id`."""
        return DeviceInfo(self.device, host_id())

    # --- prediction ---------------------------------------------------------------------------------------
    def _raw(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        out = self.runner.outputs(theta, self._inputs(x, "inputs"))
        if self._physical_outputs and not self.classification:
            return (out - self._y_mean) / self._y_std
        return out

    def _predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self._finish(self.runner.outputs(theta, self._inputs(x, "inputs")))

    def _finish(self, out: np.ndarray) -> np.ndarray:
        """The backend's raw outputs ``(n, out)`` as predictions: labels ``(n,)`` or physical values ``(n, out)``."""
        if self.classification:
            return out.argmax(1)
        return out if self._physical_outputs else out * self._y_std + self._y_mean

    def _standard(self, theta: np.ndarray, x: Samples) -> np.ndarray:
        """Regression outputs ``(n, out)`` in standardised units, float64."""
        out = self.runner.outputs(theta, x).astype(np.float64)
        return (out - self._y_mean) / self._y_std if self._physical_outputs else out

    # --- uncertainty and guided reference points (runtime/intervals.py) ----------------------------------------
    #: step of the central differences: exact where the adapted parameters enter linearly (a ridge head, the skip
    #: path), and far above float32 rounding of the outputs (~1e-7)
    JACOBIAN_STEP = 0.01

    def _jacobian(self, theta: np.ndarray, x: Samples) -> np.ndarray:
        """``d outputs / d theta`` ``(n, out, P)`` (standardised outputs) at ``theta``: the backend's own where it
        has one (ONNX Runtime: ``gauss_newton.onnx``), else central differences of its forward pass, so every
        backend (the C library included) serves it."""
        exact = getattr(self.runner, "jacobian", None)
        if exact is not None and (jac := exact(theta, x)) is not None:
            return jac
        h = self.JACOBIAN_STEP
        cols = []
        for i in range(theta.size):
            up, down = theta.copy(), theta.copy()
            up[i] += h
            down[i] -= h
            cols.append((self._standard(up, x) - self._standard(down, x)) / (2 * h))
        return np.stack(cols, axis=-1)

    @property
    def uncertainty(self) -> Uncertainty | None:
        """The bundle's fitted predictive-interval parameters (None: exported without them)."""
        return self.bundle.manifest.uncertainty

    @property
    def interval_method(self) -> str | None:
        """How this bundle's intervals are formed: ``gaussian-posterior`` (gauss-newton solver, ridge),
        ``scaled-conformal`` (gradient steps), None (classification)."""
        if self.classification:
            return None
        return "gaussian-posterior" if self.bundle.manifest.adaptation.solver == "gauss-newton" else "scaled-conformal"

    def _damping(self) -> np.ndarray:
        """The prior precisions ``exp(rates) + min_damping`` ``(P,)`` float64 (gauss-newton bundles)."""
        return np.exp(self.rates.astype(np.float64)) + float(self.bundle.manifest.adaptation.min_damping)

    def suggest(self, candidates: np.ndarray, support: np.ndarray | None = None, budget: int | None = None,
                exclude: Sequence[int] = ()) -> Suggestion:
        """The next reference point to set among ``candidates`` ``(m, *input_shape)`` (the points the user can
        actually apply), given the inputs of the reference points taken so far, ``support`` ``(k, *input_shape)``
        (None: none yet). ``exclude``: candidate indices not to offer (e.g. those already taken).

        Ridge (gauss-newton) bundles: the integrated posterior predictive variance over the candidate set (the
        unit's operating range), ``sum_c sum_o var_o(c)`` in physical units, is what a reading lowers (the
        readings themselves do not enter: the posterior covariance depends on inputs only).

        - ``budget`` None (sequential): the candidate whose reading alone lowers it most
          (:func:`~metaedge.runtime.intervals.variance_reduction`), right for a session that may stop early.
        - ``budget`` = the number of points the calibration will take in all (support included): the remaining
          ``budget - k`` points are planned jointly (:func:`~metaedge.runtime.intervals.plan_design`), and of
          those the one worth most alone is suggested first. A 3-point plan beats 3 sequential picks, which
          must each be best on their own.

        Gradient learners: a stated heuristic, the candidate farthest (standardised inputs) from every support
        point, to fill the range (``budget`` is ignored).
        """
        if self.classification:
            raise InputError("suggest picks reference points for regression bundles; this bundle classifies")
        c = self._inputs(candidates, "candidates")
        s = None if support is None else self._inputs(support, "support inputs")
        k = 0 if s is None else len(s.standard)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer))
                                   or budget <= k):
            raise InputError(f"the budget must be a whole number of reference points above the {k} already "
                             f"taken, got {budget!r}")
        blocked = np.zeros(len(c.standard), bool)
        try:
            blocked[np.asarray(list(exclude), dtype=np.int64)] = True
        except (IndexError, ValueError, TypeError):
            raise InputError(f"exclude must hold candidate indices below {len(blocked)}, got {list(exclude)!r}") \
                from None
        if blocked.all():
            raise InputError("every candidate is excluded; offer at least one point that has not been taken")
        if self.interval_method != "gaussian-posterior":
            scores = farthest_candidate(c.standard, None if s is None else s.standard)
            method, plan = "farthest-from-support", None
        else:
            covariance = self._posterior(self.theta0, s)
            sigma = np.asarray(self.uncertainty.noise_scale) if self.uncertainty else np.ones(len(self._y_std))
            weights = (sigma * self._y_std.astype(np.float64)) ** 2
            jac = self._jacobian(self.theta0, c)
            scores = variance_reduction(jac, covariance, weights)
            plan = None if budget is None else plan_design(jac, covariance, weights, budget - k, blocked)
            method = "posterior-variance-reduction" if plan is None else "posterior-variance-design"
        pick = np.where(blocked, -np.inf, scores)
        if plan is not None:
            pick = np.where(np.isin(np.arange(len(pick)), plan), pick, -np.inf)
        best = int(np.argmax(pick))
        order = (best,) if plan is None else (best, *(int(i) for i in plan if i != best))
        return Suggestion(best, c.physical[best].copy(), scores, method, order)

    def _posterior(self, theta: np.ndarray, support: Samples | None) -> np.ndarray:
        """``(J^T J + Lambda)^-1`` ``(P, P)`` for the support inputs (None: the prior ``Lambda^-1``)."""
        p = theta.size
        j = np.zeros((0, p)) if support is None else self._jacobian(theta, support).reshape(-1, p)
        return posterior_covariance(j, self._damping())


@dataclass(frozen=True)
class Support:
    """What an adaptation started from: the checked support set and the start state ``(P,)`` (None for
    prototypes), and the digest of the state file it came from (a recalibration; None otherwise)."""

    x: Samples
    y: Samples
    start: np.ndarray | None
    start_state_sha256: str | None = None


@dataclass
class Adapted:
    """A model adapted to one unit: its flat parameter vector and how many steps were kept.

    ``support``: what :meth:`Model.adapt` adapted from (None for a state read from a file); ``state_sha256``: the
    sha256 hex of the state file this was loaded from or last saved to (None until then).
    """

    model: Model
    theta: np.ndarray
    steps_run: int = 0
    steps_kept: int = 0
    support: Support | None = field(default=None, repr=False)
    state_sha256: str | None = None
    _losses: tuple[float, float] | None = field(default=None, init=False, repr=False)

    def predict(self, x: np.ndarray, interval: float | None = None) -> np.ndarray | Interval:
        """Regression: predictions ``(n, out)`` in physical units; classification: labels ``(n,)``.

        ``interval`` (e.g. 0.95, regression only): an :class:`~metaedge.runtime.intervals.Interval` with the
        prediction and the bounds of the central predictive interval at that level, physical units ``(n, out)``
        (method and fitted parameters: the manifest's ``uncertainty``; formulas: :mod:`metaedge.runtime.intervals`).
        """
        if interval is None:
            return self.model._predict(self.theta, x)
        m = self.model
        if m.classification:
            raise InputError("predictive intervals are for regression bundles; this bundle classifies")
        if m.uncertainty is None:
            raise InputError(f"{m.bundle.path} holds no fitted predictive intervals (exported before they "
                             "existed); re-export it with `metaedge export`")
        factor = multiplier(m.uncertainty, interval)
        prediction = m._predict(self.theta, x)
        half = factor * self.spread(x) * m._y_std.astype(np.float64)
        return Interval(prediction, (prediction - half).astype(np.float32), (prediction + half).astype(np.float32),
                        float(interval))

    def spread(self, x: np.ndarray, noise_scale: np.ndarray | None = None) -> np.ndarray:
        """The predictive spread ``(n, out)`` in standardised units before the level's multiplier (see
        :class:`~metaedge.runtime.manifest.Uncertainty`): ridge ``sigma * sqrt(1 + j^T (J^T J + Lambda)^-1 j)``,
        gradient learners ``sqrt(support_mse + tau^2)``. ``noise_scale`` (``sigma`` or ``tau`` ``(out,)``) defaults
        to the bundle's fitted one (the exporter passes its own while fitting)."""
        m = self.model
        if self.support is None:
            raise InputError("this adapted state has no support set (it was loaded from a file); adapt again with "
                             "model.adapt(xs, ys) to get intervals")
        if noise_scale is None:
            if m.uncertainty is None:
                raise InputError(f"{m.bundle.path} holds no fitted predictive intervals; re-export it")
            noise_scale = np.asarray(m.uncertainty.noise_scale)
        q = m._inputs(x, "inputs")
        xs, ys = self.support.x, self.support.y
        if m.interval_method == "gaussian-posterior":
            return posterior_spread(m._jacobian(self.theta, q), m._posterior(self.theta, xs), noise_scale)
        support_mse = ((m._standard(self.theta, xs) - ys.standard) ** 2).mean(0)
        return conformal_spread(support_mse, noise_scale, len(q.physical))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs ``(n, out)`` (standardised for regression, logits for classification)."""
        return self.model._raw(self.theta, x)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Classification: softmax class probabilities ``(n, ways)``."""
        z = self.logits(x)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    @property
    def losses(self) -> tuple[float, float]:
        """Support loss before (at the start state) and after adaptation (:meth:`Model.support_loss`), computed
        on first use; NaN where unknown (a state read from a file; before, for prototypes)."""
        if self._losses is None:
            s = self.support
            if s is None:
                self._losses = (np.nan, np.nan)
            else:
                before = np.nan if s.start is None else self.model.support_loss(s.start, s.x, s.y)
                self._losses = (before, self.model.support_loss(self.theta, s.x, s.y))
        return self._losses

    def save(self, path: str | Path) -> None:
        """Write the adapted state atomically (temp file, fsync, rename) in state format 2 (:mod:`.state`: the C
        library's layout, with this bundle's identity, the steps and the support losses); sets
        :attr:`state_sha256`."""
        identity = self.model.identity
        before, after = self.losses
        data = StateFile(self.theta, identity.manifest_sha256, identity.model_crc, self.steps_run,
                         self.steps_kept, before, after).to_bytes()
        atomic_write_bytes(path, data)
        self.state_sha256 = hashlib.sha256(data).hexdigest()

    def record(self, unit: str) -> AdaptationRecord:
        """This adaptation as a journal record (a new ``record_id``, now as its time); :class:`InputError` for an
        Adapted that does not come from :meth:`Model.adapt`."""
        s = self.support
        if s is None:
            raise InputError("only an adaptation made by Model.adapt can be journaled (this state was read from a "
                             "file, so its support points are unknown)")
        before, after = self.losses
        m = self.model
        return AdaptationRecord(new_record_id(), unit, m.device_info(), m.bundle_ref(), utc_now(),
                                as_rows(s.x.physical), as_rows(s.y.physical), self.steps_run, self.steps_kept,
                                before, after, self.state_sha256, s.start_state_sha256)

    def journal(self, path: str | Path, unit: str) -> AdaptationRecord:
        """Append :meth:`record` to the journal at ``path``; call it after :meth:`save` so the record names the
        saved state's digest. Returns the record appended."""
        record = self.record(unit)
        append(path, record)
        return record

    def check(self, x: np.ndarray, reference: np.ndarray, journal: str | Path | None = None,
              unit: str | None = None) -> CheckRecord:
        """In-service check: predict at ``x`` ``(m, *input_shape)`` and set the predictions beside the
        ``reference`` readings ``(m, out)`` (physical units) in a :class:`CheckRecord`, appended to ``journal``
        when given (``unit`` then required; without it the record says unit ``unknown``). Regression bundles only."""
        if self.model.classification:
            raise InputError("in-service checks compare physical readings, so they need a regression bundle")
        if journal is not None:
            unit = unit_id(unit)
        inputs = self.model._inputs(x, "check inputs")
        n, dim = len(inputs.physical), self.model.bundle.manifest.output.dim
        ref = np.asarray(reference, np.float32)
        if ref.size != n * dim:
            raise InputError(f"check references must hold {dim} value(s) for each of the {n} check inputs, got "
                             f"{ref.size} values")
        ref = ref.reshape(n, dim)
        if not np.isfinite(ref).all():
            raise InputError(f"check references hold NaN or infinite values (reading(s) {_bad_rows(ref)}); remove "
                             "those readings and retry")
        predicted = self.predict(inputs.physical)
        m = self.model
        record = CheckRecord(new_record_id(), unit or "unknown", m.device_info(), m.bundle_ref(), utc_now(),
                             as_rows(inputs.physical), as_rows(ref), as_rows(predicted), self.state_sha256)
        if journal is not None:
            append(journal, record)
        return record

    @classmethod
    def load(cls, model: Model, path: str | Path, support: tuple[np.ndarray, np.ndarray] | None = None) -> Adapted:
        """Read a state written by :meth:`save` (format 2, or format 1 ``.npz``) or by firmware for this bundle;
        :class:`BundleError` when it is corrupt, truncated, another bundle's or the wrong size. ``support``
        (``xs``, ``ys``, physical units): the support set it was adapted on, which intervals need (a state file
        holds the parameters only)."""
        dim = model.bundle.manifest.adaptation.embedding_dim or 0
        state = read_state(path, model.identity, n_theta=None if model.prototypes else model.theta0.size,
                           prototype_dim=dim if model.prototypes else None)
        adapted = cls(model, state.theta, steps_run=state.steps_run, steps_kept=state.steps_kept,
                      state_sha256=file_sha256(path))
        adapted._losses = (state.loss_before, state.loss_after)  # as the adaptation that wrote it measured them
        if support is not None:
            x = model._inputs(support[0], "support inputs")
            adapted.support = Support(x, model._targets(support[1], len(x.physical)), None)
        return adapted


