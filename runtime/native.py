"""The ``native`` backend: the C runtime (``runtime/c``, ``libmetaedge``) through ctypes.

Imports numpy, ctypes and the standard library only. The shared library is built and installed next to this file
by scikit-build-core (``pip install .`` or ``pip install -e .``); ``METAEDGE_NATIVE_LIB`` points at another build.

    from metaedge.runtime.native import NativeModel, available
    model = NativeModel(Path("bundle/model.mebin").read_bytes())
    theta, kept = model.adapt(xs, ys, steps=5)       # physical units in
    y = model.predict(theta, x)                       # physical units out (labels for classification)
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, UnavailableError

_NAMES = {"linux": "libmetaedge.so", "darwin": "libmetaedge.dylib", "win32": "metaedge.dll"}
_FLOAT_P = ctypes.POINTER(ctypes.c_float)
ME_GUARD = 1
#: names of the task, loss and solver codes of model.mebin (metaedge.h's enums), by code
TASKS = ("regression", "classification")
LOSSES = ("mse", "cross_entropy")
SOLVERS = ("sgd", "gauss-newton", "prototypes")
#: status codes of metaedge.h (ME_OK = 0, ...), for callers that match on them
STATUS_NAMES = ("ok", "null", "truncated", "magic", "version", "crc", "format", "unsupported", "arena", "shots",
                "nonfinite", "label", "argument", "singular", "state", "model")
#: the metaedge.h API major version this module was written for (ME_API_VERSION_MAJOR)
API_MAJOR = 1
#: metaedge.h's limits of a control section (ME_MAX_HORIZON, ME_MAX_CANDIDATES, ME_MAX_ITERATIONS)
MAX_HORIZON, MAX_CANDIDATES, MAX_ITERATIONS = 4096, 65536, 1024


class NativeError(InputError):
    """The C runtime refused a model or an input; ``code`` is the ``me_status`` and ``status`` its name."""

    def __init__(self, code: int, message: str, context: str = ""):
        self.code = code
        self.status = STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else str(code)
        super().__init__(f"{context}: {message}" if context else message)


def _candidates() -> list[Path]:
    """Where the shared library may be: env override, the package's directories (installed wheel, and for the
    editable install the site-packages side the redirect hook adds), then a developer's CMake build folders."""
    name = _NAMES.get(sys.platform, "libmetaedge.so")
    found = [Path(os.environ["METAEDGE_NATIVE_LIB"])] if os.environ.get("METAEDGE_NATIVE_LIB") else []
    package = sys.modules.get(__package__) if __package__ else None
    for folder in [*(getattr(package, "__path__", None) or []), str(Path(__file__).parent)]:
        found.append(Path(folder) / name)
    root = Path(__file__).resolve().parent.parent
    found += sorted(root.glob(f"build/*/runtime/c/{name}"))
    return found


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    tried = []
    for path in _candidates():
        if path.is_file():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as e:
                tried.append(f"{path} ({e})")
                continue
            try:
                _declare(lib)
            except AttributeError as e:  # a library older than the functions declared here
                tried.append(f"{path} (lacks {e})")
                continue
            major, minor = lib.me_api_version() >> 16, lib.me_api_version() & 0xFFFF
            if major != API_MAJOR:
                tried.append(f"{path} (API version {major}.{minor}, this module needs {API_MAJOR}.x)")
                continue
            lib.fast = _fast(lib)
            return lib, None
        tried.append(str(path))
    return None, ("the metaedge C library was not found (looked for " + ", ".join(tried) +
                  "); reinstall with `pip install -e .` (needs a C compiler and CMake) or set METAEDGE_NATIVE_LIB")


def _declare(lib: ctypes.CDLL) -> None:
    c_u32, c_vp, c_size = ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t
    sigs = {
        "me_api_version": (c_u32, []),
        "me_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "me_model_info": (ctypes.c_int, [c_vp, c_size, c_vp]),
        "me_state_write": (ctypes.c_int, [c_vp, c_vp, c_size, ctypes.POINTER(c_size)]),
        "me_state_read": (ctypes.c_int, [c_vp, c_vp, c_size]),
        "me_sizeof_model": (c_size, []),
        "me_sizeof_session": (c_size, []),
        "me_model_load": (ctypes.c_int, [c_vp, c_vp, c_size]),
        "me_arena_bytes": (c_size, [c_vp, c_u32]),
        "me_session_init": (ctypes.c_int, [c_vp, c_vp, c_vp, c_size, c_u32]),
        "me_theta_size": (c_u32, [c_vp]),
        "me_theta": (_FLOAT_P, [c_vp]),
        "me_set_theta": (ctypes.c_int, [c_vp, _FLOAT_P, c_u32]),
        "me_reset": (ctypes.c_int, [c_vp]),
        "me_classes": (c_u32, [c_vp]),
        "me_adapt": (ctypes.c_int, [c_vp, _FLOAT_P, _FLOAT_P, c_u32, c_u32, c_u32, c_vp]),
        "me_predict": (ctypes.c_int, [c_vp, _FLOAT_P, c_u32, _FLOAT_P]),
        "me_journal_format": (ctypes.c_int, [c_vp, c_vp, c_size, ctypes.POINTER(c_size)]),
        "me_predict_interval": (ctypes.c_int, [c_vp, c_vp, c_u32, c_vp, c_u32, ctypes.c_float, c_vp, c_vp, c_vp]),
        "me_suggest": (ctypes.c_int, [c_vp, c_vp, c_u32, c_vp, c_u32, ctypes.POINTER(c_u32), c_vp]),
        "me_plan_points": (ctypes.c_int, [c_vp, c_vp, c_u32, c_vp, c_u32, c_u32, c_vp, c_vp, c_vp]),
        # model-predictive control (API 1.2)
        "me_control_info": (ctypes.c_int, [c_vp, c_vp]),
        "me_plan": (ctypes.c_int, [c_vp, c_vp, c_vp]),
        "me_plan_reset": (ctypes.c_int, [c_vp]),
        "me_plan_result": (ctypes.c_int, [c_vp, c_vp, c_vp]),
        "me_observe": (ctypes.c_int, [c_vp, c_vp, c_vp, c_vp]),
        "me_last_adapt_info": (ctypes.c_int, [c_vp, c_vp]),
        # meta-RL: policy advantages
        "me_advantages_work": (c_size, [c_u32]),
        "me_advantages": (ctypes.c_int, [c_vp, c_vp, c_u32, c_u32, c_u32, ctypes.c_float, c_u32, c_vp, c_vp, c_vp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


def _fast(lib: ctypes.CDLL) -> dict:
    """Second prototypes of the per-call functions (``lib[name]`` is a new function object) taking every pointer as
    a plain integer address: the hot paths pass ``ndarray.ctypes.data`` instead of building pointer objects."""
    c_u32, c_vp, c_int = ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int
    sigs = {
        "me_theta": (c_vp, [c_vp]),
        "me_theta_size": (c_u32, [c_vp]),
        "me_set_theta": (c_int, [c_vp, c_vp, c_u32]),
        "me_reset": (c_int, [c_vp]),
        "me_classes": (c_u32, [c_vp]),
        "me_adapt": (c_int, [c_vp, c_vp, c_vp, c_u32, c_u32, c_u32, c_vp]),
        "me_predict": (c_int, [c_vp, c_vp, c_u32, c_vp]),
    }
    fns = {}
    for name, (res, args) in sigs.items():
        fn = lib[name]
        fn.restype, fn.argtypes = res, args
        fns[name] = fn
    return fns


_LIB, _REASON = _load()


def available() -> bool:
    """Whether the C library could be loaded."""
    return _LIB is not None


def library_path() -> Path | None:
    """The file the C library was loaded from (None when it was not)."""
    return None if _LIB is None else Path(_LIB._name)


def api_version() -> tuple[int, int]:
    """``(major, minor)`` of the loaded library's API (``me_api_version``)."""
    if _LIB is None:
        raise RuntimeError(_REASON)
    v = _LIB.me_api_version()
    return v >> 16, v & 0xFFFF


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    return _REASON


ME_ADV_NORMALIZE = 1


def advantages(obs: np.ndarray, rewards: np.ndarray, discount: float,
               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(returns, advantages)`` ``(E, T)`` float32 of one task's episodes by the C library's ``me_advantages``
    (``obs`` ``(E, T, O)``, ``rewards`` ``(E, T)``): the twin of :func:`metaedge.runtime.policy.advantages`."""
    if _LIB is None:
        raise UnavailableError(_REASON)
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    rewards = np.ascontiguousarray(rewards, dtype=np.float32)
    if obs.ndim != 3 or rewards.shape != obs.shape[:2]:
        raise InputError(f"observations must be (episodes, steps, obs_dim) and rewards (episodes, steps), got "
                         f"{obs.shape} and {rewards.shape}")
    e, t, o = obs.shape
    work = np.empty(_LIB.me_advantages_work(o), dtype=np.float64)
    ret, adv = np.empty((e, t), np.float32), np.empty((e, t), np.float32)
    NativeModel._check(_LIB.me_advantages(obs.ctypes.data, rewards.ctypes.data, e, t, o, float(discount),
                                          ME_ADV_NORMALIZE if normalize else 0, work.ctypes.data, ret.ctypes.data,
                                          adv.ctypes.data), "advantages")
    return ret, adv


class _AdaptInfo(ctypes.Structure):
    _fields_ = [("steps_run", ctypes.c_uint32), ("steps_kept", ctypes.c_uint32), ("loss_before", ctypes.c_float),
                ("loss_after", ctypes.c_float)]


class _JournalEntry(ctypes.Structure):
    """``me_journal_entry`` of metaedge.h."""

    _fields_ = [*((name, ctypes.c_char_p) for name in (
        "record_id", "unit", "device_profile", "host_id", "manifest_sha256", "signing_key_id", "time")),
        ("support_x", ctypes.c_void_p), ("support_y", ctypes.c_void_p), ("n", ctypes.c_uint32),
        ("in_dim", ctypes.c_uint32), ("out_dim", ctypes.c_uint32), ("info", _AdaptInfo),
        ("state_sha256", ctypes.c_char_p), ("start_state_sha256", ctypes.c_char_p)]


def journal_line(record) -> bytes:
    """An :class:`~metaedge.runtime.journal_records.AdaptationRecord` as firmware journals it: the JSON Lines
    line ``me_journal_format`` writes (floats as float32, ``%.9g``; ends in a newline). For hosts that speak for a
    microcontroller, and the tests that hold the C and Python records to one schema."""
    if _LIB is None:
        raise UnavailableError(_REASON)

    def text(v: str | None) -> bytes | None:
        return None if v is None else v.encode("utf-8")

    x, y = (np.ascontiguousarray(np.asarray(a, np.float32)) for a in (record.support_x, record.support_y))
    info = _AdaptInfo(record.steps_run, record.steps_kept, record.loss_before, record.loss_after)
    entry = _JournalEntry(text(record.record_id), text(record.unit), text(record.device.profile),
                          text(record.device.host_id), text(record.bundle.manifest_sha256),
                          text(record.bundle.signing_key_id), text(record.time), x.ctypes.data, y.ctypes.data,
                          x.shape[0], x.shape[1], y.shape[1], info, text(record.state_sha256),
                          text(record.start_state_sha256))
    need = ctypes.c_size_t(0)
    status = _LIB.me_journal_format(ctypes.byref(entry), ctypes.create_string_buffer(1), 1, ctypes.byref(need))
    if status != STATUS_NAMES.index("argument") or need.value == 0:
        NativeModel._check(status, "journal record")
    buf = ctypes.create_string_buffer(need.value + 1)
    NativeModel._check(_LIB.me_journal_format(ctypes.byref(entry), buf, need.value + 1, ctypes.byref(need)),
                       "journal record")
    return buf.raw[:need.value]


class _ModelInfo(ctypes.Structure):
    """``me_model_info_t`` of metaedge.h."""

    _fields_ = [(name, ctypes.c_uint32) for name in (
        "format_version", "bytes", "crc", "task", "loss", "solver", "default_steps", "in_dim", "out_dim", "n_params",
        "n_theta", "n_layers", "in_channels", "in_length")] + [("min_damping", ctypes.c_float)]


@dataclass(frozen=True)
class Header:
    """What a model.mebin declares, as the C library's parser reads it (``me_model_info``; docs/firmware.md)."""

    task: str
    loss: str
    solver: str
    default_steps: int
    in_dim: int
    out_dim: int
    n_params: int
    n_theta: int
    format_version: int
    crc: int  # the model's CRC-32 field: its identity in adapted states
    min_damping: float  # Gauss-Newton damping floor (0 for other solvers)
    input_shape: tuple[int, ...]  # (channels, length) for a conv1d first layer, else (in_dim,)

    @classmethod
    def read(cls, data: bytes) -> Header:
        """Validate ``data`` (a model.mebin) with the C parser and describe it; :class:`NativeError` if refused."""
        if _LIB is None:
            raise RuntimeError(_REASON)
        info = _ModelInfo()
        status = _LIB.me_model_info(data, len(data), ctypes.byref(info))
        if status != 0:
            raise NativeError(status, _LIB.me_strerror(status).decode(), "model.mebin")
        shape = (info.in_channels, info.in_length) if info.in_length else (info.in_dim,)
        return cls(TASKS[info.task], LOSSES[info.loss], SOLVERS[info.solver], info.default_steps,
                   info.in_dim, info.out_dim, info.n_params, info.n_theta, info.format_version, info.crc,
                   float(info.min_damping), shape)


class NativeModel:
    """A model.mebin loaded into the C runtime, with an arena sized for ``max_shots`` support samples (grown on
    demand).

    Args:
        mebin: the bytes of ``model.mebin``.
        max_shots: support-set size to size the arena for; larger support sets reallocate it.
    """

    def __init__(self, mebin: bytes, max_shots: int = 64) -> None:
        if _LIB is None:
            raise UnavailableError(_REASON)
        self._data = ctypes.create_string_buffer(bytes(mebin), len(mebin))  # the model points into it
        self._model = ctypes.create_string_buffer(_LIB.me_sizeof_model())
        self._check(_LIB.me_model_load(self._model, self._data, len(mebin)), "model.mebin")
        self.header = Header.read(bytes(mebin))
        self.input_shape = self.header.input_shape
        self._session = ctypes.create_string_buffer(_LIB.me_sizeof_session())
        self._s = ctypes.addressof(self._session)
        self._fn = _LIB.fast
        self._info = _AdaptInfo()
        self._info_p = ctypes.addressof(self._info)
        self._views: dict[int, np.ndarray] = {}  # state address in the arena -> numpy view of n_theta floats
        self._arena = None
        self.max_shots = 0
        self._init(max(1, int(max_shots)))
        self.theta0 = self._theta()

    # --- properties ----------------------------------------------------------------------------------------
    @property
    def classification(self) -> bool:
        return self.header.task == "classification"

    @property
    def prototypes(self) -> bool:
        return self.header.solver == "prototypes"

    @property
    def default_steps(self) -> int:
        return self.header.default_steps

    def arena_bytes(self, max_shots: int) -> int:
        """Bytes of arena the C runtime needs for ``max_shots`` support samples."""
        return int(_LIB.me_arena_bytes(self._model, int(max_shots)))

    # --- plumbing --------------------------------------------------------------------------------------------
    @staticmethod
    def _check(status: int, context: str = "") -> None:
        if status != 0:
            raise NativeError(status, _LIB.me_strerror(status).decode(), context)

    def _init(self, max_shots: int) -> None:
        size = self.arena_bytes(max_shots)
        if size == 0:
            raise InputError(f"max_shots must be in 1..65536, got {max_shots}")
        self._arena = ctypes.create_string_buffer(size)
        self._check(_LIB.me_session_init(self._session, self._model, self._arena, size, max_shots), "arena")
        self.max_shots = max_shots
        self._views = {}

    def _theta(self) -> np.ndarray:
        if self.prototypes:
            n = _LIB.me_theta_size(self._session)
            ptr = _LIB.me_theta(self._session)
            return np.ctypeslib.as_array(ptr, (n,)).copy() if n else np.zeros(0, np.float32)
        n = self.header.n_theta
        if n == 0:
            return np.zeros(0, np.float32)
        address = self._fn["me_theta"](self._s)  # one of two buffers in the arena (the library ping-pongs)
        view = self._views.get(address)
        if view is None:
            view = self._views[address] = np.frombuffer((ctypes.c_float * n).from_address(address), np.float32)
        return view.copy()

    def _inputs(self, x: np.ndarray, what: str) -> np.ndarray:
        if (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.shape[0]
                and x.shape[1] == self.header.in_dim and x.flags.c_contiguous):
            return x  # the common case, without copies
        x = np.asarray(x, dtype=np.float32)
        shape = self.input_shape
        if x.shape == shape and (len(shape) > 1 or self.header.in_dim != 1):
            x = x[None]  # one sample
        if len(shape) > 1 and x.ndim > 2 and x.shape[1:] != shape:
            raise InputError(f"{what} must have shape (n, {', '.join(map(str, shape))}) (channels, length) or "
                             f"(n, {self.header.in_dim}) with n >= 1, got {x.shape}")
        x = np.ascontiguousarray(x.reshape(x.shape[0] if x.ndim else 1, -1))  # (n, C, L) -> (n, C * L), row-major
        if x.shape[1] != self.header.in_dim or x.shape[0] == 0:
            raise InputError(f"{what} must have shape (n, {', '.join(map(str, shape))}) with n >= 1, got {x.shape}")
        return x

    # --- API -------------------------------------------------------------------------------------------------
    def adapt(self, xs: np.ndarray, ys: np.ndarray, steps: int | None = None, guard: bool = True,
              start: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Adapt on a support set, from the meta-learned initial state or from ``start``.

        Args:
            xs: ``(k, in_dim)`` inputs in physical units; conv models also take ``(k, channels, length)``.
            ys: ``(k, out_dim)`` targets in physical units, or ``(k,)`` class labels ``0..ways-1``.
            steps: adaptation steps (default: the bundle's); ignored for prototype heads.
            guard: roll back a step that raises the support loss and stop there.
            start: a state to continue from (``(n_theta,)``, e.g. an earlier ``adapt`` result) instead of
                ``theta0``; refused like a bad ``predict`` state (wrong size, non-finite).

        Returns:
            ``(theta, steps_kept)``: the flat adapted vector ``(n_theta,)`` float32 in the bundle's layout
            (prototypes: ``(ways * dim,)``) and the number of steps kept.
        """
        x = self._inputs(xs, "support inputs")
        k = x.shape[0]
        per = 1 if self.classification else self.header.out_dim
        y = ys if (type(ys) is np.ndarray and ys.dtype == np.float32 and ys.flags.c_contiguous) else \
            np.ascontiguousarray(np.asarray(ys, dtype=np.float32))
        if y.size != k * per:
            raise InputError(f"support targets must hold {per} value(s) for each of the {k} samples, got {y.size}")
        steps = self.default_steps if steps is None else int(steps)
        if steps < 0:
            raise InputError(f"steps must be >= 0, got {steps}")
        if k > self.max_shots:
            self._init(k)
        fn = self._fn
        if start is None:
            self._check(fn["me_reset"](self._s))
        else:
            state = self._state(start)
            self._check(fn["me_set_theta"](self._s, state.ctypes.data, state.size), "start")
        self._check(fn["me_adapt"](self._s, x.ctypes.data, y.ctypes.data, k, steps, ME_GUARD if guard else 0,
                                   self._info_p), "adapt")
        return self._theta(), int(self._info.steps_kept)

    @staticmethod
    def _state(theta: np.ndarray) -> np.ndarray:
        if type(theta) is np.ndarray and theta.dtype == np.float32 and theta.ndim == 1 and theta.flags.c_contiguous:
            return theta
        return np.ascontiguousarray(np.asarray(theta, dtype=np.float32).reshape(-1))

    def outputs(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Regression: predictions ``(n, out_dim)`` in physical units; classification: logits ``(n, classes)``."""
        x = self._inputs(x, "inputs")
        theta = self._state(theta)
        fn = self._fn
        self._check(fn["me_set_theta"](self._s, theta.ctypes.data, theta.size), "state")
        classes = fn["me_classes"](self._s) if self.prototypes else self.header.out_dim
        out = np.empty((x.shape[0], classes), np.float32)
        self._check(fn["me_predict"](self._s, x.ctypes.data, x.shape[0], out.ctypes.data), "predict")
        return out

    def state_bytes(self, theta: np.ndarray) -> bytes:
        """``theta`` as the C library writes an adapted state (format 2, ``me_state_write``: bundle identity zero,
        no adaptation info); the bytes firmware stores."""
        state = self._state(theta)
        self._check(self._fn["me_set_theta"](self._s, state.ctypes.data, state.size), "state")
        need = ctypes.c_size_t(0)
        _LIB.me_state_write(self._s, ctypes.create_string_buffer(1), 0, ctypes.byref(need))  # sizes it
        buf = ctypes.create_string_buffer(need.value)
        self._check(_LIB.me_state_write(self._s, buf, need.value, ctypes.byref(need)), "state")
        return buf.raw[:need.value]

    def theta_from_state(self, data: bytes) -> np.ndarray:
        """The state in ``data`` (format 2) as ``me_state_read`` checks and loads it; :class:`NativeError` (e.g.
        status ``"crc"``, ``"model"``) when refused."""
        self._check(_LIB.me_state_read(self._s, bytes(data), len(data)), "state")
        return self._theta()

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Predictions for ``x`` ``(n, in_dim)`` with state ``theta``: ``(n, out_dim)`` in physical units, or class
        labels ``(n,)`` for classification."""
        out = self.outputs(theta, x)
        return out.argmax(1) if self.classification else out

    def logits(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Class logits ``(n, classes)`` for classification; for regression the predictions ``(n, out_dim)``."""
        return self.outputs(theta, x)

    def _support_inputs(self, xs: np.ndarray | None, extra: int = 0) -> tuple[np.ndarray, int]:
        """Support inputs ``(k, in_dim)`` (None: none, k = 0), the arena grown to hold them and ``extra`` rows."""
        x = np.zeros((0, self.header.in_dim), np.float32) if xs is None else self._inputs(xs, "support inputs")
        if max(len(x), extra) > self.max_shots:
            self._init(max(len(x), extra))
        return x, len(x)

    def predict_interval(self, theta: np.ndarray, xs: np.ndarray | None, x: np.ndarray, level: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``me_predict_interval``: predictions, lower and upper bounds ``(n, out_dim)`` (physical units) at state
        ``theta`` adapted on the support inputs ``xs`` ``(k, in_dim)``; ridge models with fitted intervals."""
        s, k = self._support_inputs(xs)
        x = self._inputs(x, "inputs")
        state = self._state(theta)
        self._check(self._fn["me_set_theta"](self._s, state.ctypes.data, state.size), "state")
        out, lo, hi = (np.empty((x.shape[0], self.header.out_dim), np.float32) for _ in range(3))
        self._check(_LIB.me_predict_interval(self._s, s.ctypes.data if k else None, k, x.ctypes.data, x.shape[0],
                                             float(level), out.ctypes.data, lo.ctypes.data, hi.ctypes.data),
                    "interval")
        return out, lo, hi

    def suggest(self, theta: np.ndarray, xs: np.ndarray | None, candidates: np.ndarray) -> tuple[int, np.ndarray]:
        """``me_suggest``: the index of the candidate ``(m, in_dim)`` that most lowers the integrated predictive
        variance given the support inputs ``xs`` (None: none), and every candidate's reduction ``(m,)``."""
        c = self._inputs(candidates, "candidates")
        s, k = self._support_inputs(xs, extra=len(c))
        state = self._state(theta)
        self._check(self._fn["me_set_theta"](self._s, state.ctypes.data, state.size), "state")
        best, scores = ctypes.c_uint32(0), np.empty(len(c), np.float32)
        self._check(_LIB.me_suggest(self._s, s.ctypes.data if k else None, k, c.ctypes.data, len(c),
                                    ctypes.byref(best), scores.ctypes.data), "suggest")
        return int(best.value), scores

    def plan_points(self, theta: np.ndarray, xs: np.ndarray | None, candidates: np.ndarray, count: int,
                    exclude: np.ndarray | None = None) -> list[int]:
        """``me_plan_points``: the ``count`` candidates ``(m, in_dim)`` still to take, planned as one design given
        the support inputs ``xs`` (None: none), the one worth most alone first; ``exclude`` ``(m,)`` booleans."""
        c = self._inputs(candidates, "candidates")
        s, k = self._support_inputs(xs, extra=len(c))
        state = self._state(theta)
        self._check(self._fn["me_set_theta"](self._s, state.ctypes.data, state.size), "state")
        plan = np.zeros(max(count, 1), np.uint32)
        blocked = np.zeros(len(c), np.uint8) if exclude is None else np.asarray(exclude, np.uint8)
        work = np.empty(len(c) * self.header.n_theta, np.float32)
        self._check(_LIB.me_plan_points(self._s, s.ctypes.data if k else None, k, c.ctypes.data, len(c), count,
                                        blocked.ctypes.data, plan.ctypes.data, work.ctypes.data), "plan")
        return [int(v) for v in plan[:count]]

# --- model-predictive control on the C session (API 1.2) ------------------------------------------------------------

class _ControlInfo(ctypes.Structure):
    """``me_control_info_t`` of metaedge.h."""

    _fields_ = [*((name, ctypes.c_uint32) for name in (
        "state_dim", "action_dim", "planner", "horizon", "candidates", "iterations", "elites", "window", "adapt_every",
        "n_wrap")), ("seed", ctypes.c_uint64), ("dt", ctypes.c_float)]


@dataclass(frozen=True)
class ControlHeader:
    """The control section of a format-5 model.mebin, as the C parser read it (``me_control_info``)."""

    state_dim: int
    action_dim: int
    planner: str  # "random-shooting" | "cem"
    horizon: int
    candidates: int
    iterations: int
    elites: int
    window: int
    adapt_every: int
    n_wrap: int
    seed: int
    dt: float


class NativeSession:
    """One C session of a dynamics model.mebin with a control section, driven as firmware drives it: ``plan`` the
    next action (``me_plan``), ``observe`` each transition (``me_observe``: the window of the last ``window`` and a
    guarded re-adaptation from theta0 every ``adapt_every``), ``reset_plan`` (``me_plan_reset``) and ``reset``
    (``me_reset``: theta0, window forgotten). The state it plans with is the session's own, as on a device.

    Args:
        mebin: the bytes of ``model.mebin`` (format 5, with a control section).
        max_shots: network rows of the session (candidates are rolled out this many at a time); raised to the
            control window.
    """

    def __init__(self, mebin: bytes, max_shots: int = 64) -> None:
        self._model = NativeModel(mebin, max_shots)
        info = _ControlInfo()
        self._model._check(_LIB.me_control_info(self._model._model, ctypes.byref(info)), "control section")
        self.control = ControlHeader(info.state_dim, info.action_dim, ("random-shooting", "cem")[info.planner],
                                     info.horizon, info.candidates, info.iterations, info.elites, info.window,
                                     info.adapt_every, info.n_wrap, int(info.seed), float(info.dt))
        self._s = self._model._s
        self._observed = 0

    @property
    def header(self) -> Header:
        return self._model.header

    @property
    def max_shots(self) -> int:
        return self._model.max_shots

    @property
    def arena_bytes(self) -> int:
        """Bytes of arena this session was created with (planner and window included)."""
        return self._model.arena_bytes(self._model.max_shots)

    @property
    def theta(self) -> np.ndarray:
        """``(n_theta,)`` the session's current (adapted) state."""
        return self._model._theta()

    def _vector(self, v: np.ndarray, n: int, what: str) -> np.ndarray:
        a = np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1))
        if a.size != n:
            raise InputError(f"{what} must hold {n} value(s), got {a.size}")
        return a

    def plan(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(action (A,), sequence (H, A), cost)`` of ``me_plan`` from ``state`` ``(S,)``."""
        c = self.control
        s = self._vector(state, c.state_dim, "state")
        action = np.empty(c.action_dim, np.float32)
        self._model._check(_LIB.me_plan(self._s, s.ctypes.data, action.ctypes.data), "plan")
        seq, cost = np.empty((c.horizon, c.action_dim), np.float32), ctypes.c_double(0.0)
        self._model._check(_LIB.me_plan_result(self._s, seq.ctypes.data, ctypes.byref(cost)), "plan")
        return action, seq, float(cost.value)

    def observe(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> bool:
        """``me_observe`` of one transition; True when it re-adapted (every ``adapt_every``-th observation)."""
        c = self.control
        s, a, n = (self._vector(v, d, w) for v, d, w in ((state, c.state_dim, "state"),
                                                          (action, c.action_dim, "action"),
                                                          (next_state, c.state_dim, "next state")))
        self._model._check(_LIB.me_observe(self._s, s.ctypes.data, a.ctypes.data, n.ctypes.data), "observe")
        self._observed += 1
        return self._observed % c.adapt_every == 0

    def last_adapt(self) -> tuple[int, int, float, float]:
        """``(steps_run, steps_kept, loss_before, loss_after)`` of the last re-adaptation (``me_last_adapt_info``;
        NaN losses before the first)."""
        info = _AdaptInfo()
        self._model._check(_LIB.me_last_adapt_info(self._s, ctypes.byref(info)), "adapt info")
        return int(info.steps_run), int(info.steps_kept), float(info.loss_before), float(info.loss_after)

    def reset_plan(self) -> None:
        """``me_plan_reset``: the planner's call counter at 0 and CEM's mean at the middle of the range."""
        self._model._check(_LIB.me_plan_reset(self._s), "plan")

    def reset(self) -> None:
        """``me_reset``: theta0, and the window of transitions forgotten."""
        self._model._check(_LIB.me_reset(self._s), "reset")
        self._observed = 0
