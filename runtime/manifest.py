"""The bundle manifest as frozen, typed parts: the one contract between the exporter and every device.

``Manifest.parse(json.loads(text))`` turns untrusted JSON into a :class:`Manifest` or raises
:class:`~metaedge.runtime.errors.ManifestError` with one sentence naming the missing or wrongly typed field by its
dotted path (``adaptation.parameters[1].shape``) and saying what to do; ``manifest.to_json()`` writes it back, and
``Manifest.parse(json.loads(m.to_json())) == m``. Nothing outside this module reads manifest keys.

Every part is read by one generic reader driven by the dataclass fields and their type hints: a field with a
default is optional in the JSON (so format-1 bundles written before a key existed still load), a field without
one is required, unknown keys are ignored (the version rules in ``docs/bundle.md``). Each part checks its own
invariants (a layout's offsets, a solver's parameters) in ``_problems``.

Standard library + numpy only: the runtime on a device reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

from .errors import ManifestError

#: the newest manifest format this runtime reads (see docs/bundle.md for the version rules)
FORMAT_VERSION = 1
#: how a device adapts: the rate-weighted gradient step of ``adapt_step.onnx``, a damped Gauss-Newton solve on
#: ``gauss_newton.onnx``'s Jacobian, or class prototypes from the embedding graph
Solver = Literal["sgd", "gauss-newton", "prototypes"]
SOLVERS: tuple[str, ...] = get_args(Solver)
TaskKind = Literal["regression", "classification"]
#: how a regression bundle's predictive intervals are formed (see :class:`Uncertainty`)
IntervalMethod = Literal["gaussian-posterior", "scaled-conformal"]
#: roles of a bundle's ONNX graphs
GRAPH_ROLES = ("forward", "adapt_step", "adapt_steps", "gauss_newton", "adapt_predict")
_REEXPORT = "re-export the bundle with `metaedge export`"
_SHA256 = re.compile(r"[0-9a-f]{64}")


# --- the generic reader and writer ---------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    """How a JSON value reads in a message: ``null``, ``a boolean``, ``a list``, ..."""
    for kind, name in ((type(None), "null"), (bool, "a boolean"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or (dataclasses.is_dataclass(tp) and tp is not Layout):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Layout: "a list"}.get(
        tp, "a JSON value")


def _wrong(path: str, expected: str, value: Any) -> ManifestError:
    return ManifestError(f"manifest field {path} must be {expected}, got {_json_type(value)}; {_REEXPORT}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _parse(tp: Any, value: Any, path: str) -> Any:
    """``value`` (decoded JSON) as type ``tp`` (a part, a scalar, ``tuple[X, ...]``, ``dict[str, X]``, a Literal or
    an Optional); raises :class:`ManifestError` naming ``path``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        if value is None:
            raise _wrong(path, _describe(tp), value)
        return _parse(inner, value, path)
    if origin is Literal:
        if not isinstance(value, str) or value not in args:
            raise ManifestError(f"manifest field {path} must be {_describe(tp)}, got {value!r}; {_REEXPORT}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _wrong(path, _describe(tp), value)
        return tuple(_parse(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(path, "an object", value)
        return {k: _parse(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return tp._read(value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(path, "a number", value)
        return float(value)
    if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):  # JSON true is no integer
        raise _wrong(path, _describe(tp), value)
    return value


def _dump(value: Any) -> Any:
    """A part (or a value inside one) as plain JSON data."""
    if dataclasses.is_dataclass(value):
        return value._write()
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


class _Part:
    """Reading and writing shared by every manifest part (a frozen dataclass)."""

    @classmethod
    def _read(cls, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _wrong(path or "(the manifest)", "an object", value)
        prefix = f"{path}." if path else ""
        value = cls._legacy(value, prefix)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = f.metadata.get("key", f.name)
            if key in value:
                kwargs[f.name] = _parse(_hints(cls)[f.name], value[key], prefix + key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"manifest field {prefix + key} is missing; {_REEXPORT}")
        part = cls(**kwargs)
        for where, problem in part._problems():
            raise ManifestError(f"manifest field {prefix + where} {problem}; {_REEXPORT}")
        return part

    @classmethod
    def _legacy(cls, value: dict, prefix: str) -> dict:
        """Fill in what older format-1 writers left out, where it can be derived (nothing by default)."""
        return value

    def _problems(self) -> Iterator[tuple[str, str]]:
        """``(field, what is wrong)`` for each broken invariant; types are already checked."""
        return iter(())

    def _write(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.default is None:  # an absent optional part
                continue
            out[f.metadata.get("key", f.name)] = _dump(value)
        return out


def _positive(values: tuple[float, ...]) -> bool:
    return all(v > 0 and math.isfinite(v) for v in values)


# --- the parts -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec(_Part):
    """Inputs ``(n, *shape)``: one name and unit per feature (vectors), or per channel."""

    shape: tuple[int, ...]
    names: tuple[str, ...]
    units: tuple[str, ...]

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not self.shape or min(self.shape) < 1:
            yield "shape", f"must be a non-empty list of positive sizes, got {list(self.shape)}"


@dataclass(frozen=True)
class OutputSpec(_Part):
    """Outputs ``(n, dim)`` (regression) or ``dim`` classes (classification; prototype bundles take any number)."""

    dim: int
    names: tuple[str, ...]
    units: tuple[str, ...]

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.dim < 1:
            yield "dim", f"must be at least 1, got {self.dim}"


@dataclass(frozen=True)
class Normalization(_Part):
    """Per-feature standardisation: the runtime feeds ``(x - x_mean) / x_std`` and ``(y - y_mean) / y_std``."""

    x_mean: tuple[float, ...]
    x_std: tuple[float, ...]
    y_mean: tuple[float, ...]
    y_std: tuple[float, ...]

    def _problems(self) -> Iterator[tuple[str, str]]:
        for name in ("x_std", "y_std"):
            if not _positive(getattr(self, name)):
                yield name, "must hold positive finite numbers"


@dataclass(frozen=True)
class Parameter(_Part):
    """One adapted parameter: its slice ``[offset, offset + size)`` of the flat state, reshaped to ``shape``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    size: int

    def _problems(self) -> Iterator[tuple[str, str]]:
        if min(self.shape, default=1) < 0 or self.size != math.prod(self.shape):
            yield "size", f"must be the product of shape {list(self.shape)}, got {self.size}"


@dataclass(frozen=True)
class Layout(_Part):
    """Where each adapted parameter lies in the flat state ``theta`` ``(P,)`` (and in ``theta0``/``rates``)."""

    parameters: tuple[Parameter, ...]

    @classmethod
    def build(cls, shapes: Mapping[str, tuple[int, ...]]) -> Layout:
        """The contiguous layout of ``{name: shape}`` in that order."""
        params, offset = [], 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            params.append(Parameter(name, tuple(int(d) for d in shape), offset, size))
            offset += size
        return cls(tuple(params))

    @classmethod
    def _read(cls, value: Any, path: str) -> Layout:  # a plain list in the JSON
        layout = cls(_parse(tuple[Parameter, ...], value, path))
        for where, problem in layout._problems():
            raise ManifestError(f"manifest field {path}{where} {problem}; {_REEXPORT}")
        return layout

    def _write(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [p._write() for p in self.parameters]

    def _problems(self) -> Iterator[tuple[str, str]]:
        offset, seen = 0, set()
        for i, p in enumerate(self.parameters):
            if p.offset != offset:
                yield f"[{i}].offset", f"must be {offset} (the parameters are contiguous), got {p.offset}"
            if p.name in seen:
                yield f"[{i}].name", f"repeats {p.name!r}"
            offset += p.size
            seen.add(p.name)

    @property
    def size(self) -> int:
        """P, the length of the flat state."""
        return sum(p.size for p in self.parameters)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @cached_property
    def _slices(self) -> tuple[tuple[int, ...], tuple[tuple[str, slice, tuple[int, ...]], ...]]:
        """The flat shape ``(P,)`` and each parameter's slice, worked out once (splitting is a device's hot path)."""
        return (self.size,), tuple((p.name, slice(p.offset, p.offset + p.size), p.shape) for p in self.parameters)

    def split(self, flat: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
        """``flat`` ``(P,)`` as ``{prefix + name: view of shape}`` (views: no copy)."""
        shape, slices = self._slices
        if flat.shape != shape:
            raise ValueError(f"a flat state of this layout has shape {shape}, got {flat.shape}")
        return {prefix + name: flat[s].reshape(dims) for name, s, dims in slices}

    def flatten(self, values: Mapping[str, np.ndarray], prefix: str = "") -> np.ndarray:
        """``{prefix + name: array of shape}`` as one float32 vector ``(P,)`` in layout order."""
        parts = []
        for p in self.parameters:
            a = np.asarray(values[prefix + p.name], np.float32)
            if a.size != p.size:
                raise ValueError(f"{prefix + p.name} holds {a.size} values, the layout says {p.size} {list(p.shape)}")
            parts.append(a.reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass(frozen=True)
class Adaptation(_Part):
    """What adapts and how: the spec, the solver and its parameters, the default step count, the layout."""

    spec: str
    solver: Solver
    inner_steps: int
    layout: Layout = field(metadata={"key": "parameters"})
    size: int
    #: prototype bundles: the embedding's width (the state is ``ways * embedding_dim`` prototype values)
    embedding_dim: int | None = None
    #: gauss-newton: the damping added to ``exp(rates)`` on the diagonal of the normal equations
    min_damping: float | None = None

    @property
    def prototypes(self) -> bool:
        return self.solver == "prototypes"

    @classmethod
    def _legacy(cls, value: dict, prefix: str) -> dict:
        flag = value.get("prototypes", False)  # written for readers of the ProtoNet bundles before `solver`
        if not isinstance(flag, bool):
            raise _wrong(prefix + "prototypes", "true or false", flag)
        if "solver" not in value:  # the first format-1 bundles: gradient steps, or prototypes where flagged
            return {**value, "solver": "prototypes" if flag else "sgd"}
        if flag != (value["solver"] == "prototypes"):
            raise ManifestError(f"manifest field {prefix}prototypes is {str(flag).lower()} but the solver is "
                                f"{value['solver']!r}; {_REEXPORT}")
        return value

    def _write(self) -> dict[str, Any]:
        return {**super()._write(), "prototypes": self.prototypes}

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.size != self.layout.size:
            yield "size", f"must equal the parameters' total size {self.layout.size}, got {self.size}"
        if self.inner_steps < 0:
            yield "inner_steps", f"must be >= 0, got {self.inner_steps}"
        if self.solver == "gauss-newton" and (self.min_damping is None or not self.min_damping >= 0):
            yield "min_damping", "must be a number >= 0 for the gauss-newton solver"
        if self.solver == "prototypes" and (self.embedding_dim is None or self.embedding_dim < 1):
            yield "embedding_dim", "must be a positive integer for the prototypes solver"


@dataclass(frozen=True)
class Uncertainty(_Part):
    """What a device needs for predictive intervals, meta-fitted at export on meta-validation tasks
    (``export/uncertainty.py``); the runtime's formulas are in :mod:`metaedge.runtime.intervals`.

    The half-width of the interval at ``level`` for output ``o`` is, in physical units,
    ``factor(level) * y_std[o] * spread[o](x)`` with

    - ``gaussian-posterior`` (ridge): ``spread = noise_scale[o] * sqrt(1 + j^T (J^T J + Lambda)^-1 j)``, the
      posterior predictive standard deviation of Bayesian linear regression in standardised units, and
      ``factor = calibration * z(level)`` (``calibration`` = ``factors[i] / z(levels[i])``, 1 for exact Gaussians);
    - ``scaled-conformal`` (gradient learners): ``spread = sqrt(support_mse[o] + noise_scale[o]^2)``, the task's
      support residual after adaptation, and ``factor`` the split-conformal quantile of ``|y - f| / spread``.

    ``factors`` hold one multiplier per fitted level (increasing); other levels between them interpolate linearly.
    """

    method: IntervalMethod
    #: sigma (gaussian-posterior) or the residual floor (scaled-conformal), per output, standardised units
    noise_scale: tuple[float, ...]
    levels: tuple[float, ...]
    factors: tuple[float, ...]
    #: meta-validation tasks and support points per task the factors were fitted on
    tasks: int
    shots: int

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not _positive(self.noise_scale):
            yield "noise_scale", "must hold positive finite numbers"
        if not self.levels or len(self.factors) != len(self.levels):
            yield "factors", f"must hold one number per level ({len(self.levels)}), got {len(self.factors)}"
        elif not all(0 < v < 1 for v in self.levels) or any(b <= a for a, b in zip(self.levels, self.levels[1:])):
            yield "levels", "must be increasing numbers strictly between 0 and 1"
        elif not _positive(self.factors):
            yield "factors", "must hold positive finite numbers"


Planner = Literal["random-shooting", "cem"]


@dataclass(frozen=True)
class Control(_Part):
    """Model-predictive control over a learned dynamics model (``metaedge.runtime.control``).

    The bundle's model maps ``concat(state, action)`` (``state_dim + action_dim`` inputs) to the state change over
    one control period (``state_dim`` outputs). The planner rolls ``candidates`` action sequences of ``horizon``
    steps through it and scores each with the quadratic cost
    ``sum_t (s_t - target)^T diag(q) (s_t - target) + a_t^T diag(r) a_t`` (the dims in ``wrap`` are angles: the
    state and its error are wrapped to ``[-pi, pi)``). A device re-adapts from its last ``window`` transitions every
    ``adapt_every`` steps.
    """

    state_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    planner: Planner
    horizon: int
    candidates: int
    q: tuple[float, ...]
    r: tuple[float, ...]
    target: tuple[float, ...]
    window: int
    adapt_every: int
    #: seconds per control step (for reports; the model knows nothing of time)
    dt: float
    seed: int = 0
    #: CEM: refinement rounds and the number of lowest-cost sequences each refits the sampling Gaussian to
    iterations: int = 1
    elites: int = 0
    wrap: tuple[int, ...] = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        s, a = self.state_dim, self.action_dim
        for name, value, lo in (("state_dim", s, 1), ("action_dim", a, 1), ("horizon", self.horizon, 1),
                                ("candidates", self.candidates, 1), ("window", self.window, 1),
                                ("adapt_every", self.adapt_every, 1), ("iterations", self.iterations, 1),
                                ("seed", self.seed, 0)):
            if value < lo:
                yield name, f"must be >= {lo}, got {value}"
        for name, value, n in (("action_low", self.action_low, a), ("action_high", self.action_high, a),
                               ("q", self.q, s), ("r", self.r, a), ("target", self.target, s)):
            if len(value) != n or not all(math.isfinite(v) for v in value):
                yield name, f"must hold {n} finite numbers"
        if any(h <= lo for lo, h in zip(self.action_low, self.action_high)):
            yield "action_high", "must exceed action_low in every dimension"
        if any(v < 0 for v in self.q + self.r):
            yield "q", "and r must hold numbers >= 0"
        if not all(0 <= i < s for i in self.wrap):
            yield "wrap", f"must hold state indices below {s}"
        if not (self.dt > 0 and math.isfinite(self.dt)):
            yield "dt", "must be a positive number"
        if self.planner == "cem" and not 1 <= self.elites <= self.candidates:
            yield "elites", f"must be between 1 and candidates ({self.candidates}) for the cem planner"


@dataclass(frozen=True)
class Graphs(_Part):
    """The ONNX graph file of each role (None: not exported)."""

    forward: str | None = None
    adapt_step: str | None = None
    adapt_steps: str | None = None
    gauss_newton: str | None = None
    #: the unrolled steps and the forward pass on queries in one graph (optional: older bundles lack it)
    adapt_predict: str | None = None

    def files(self) -> dict[str, str]:
        """``{role: file name}`` of the graphs present."""
        return {r: f for r in GRAPH_ROLES if (f := getattr(self, r)) is not None}


@dataclass(frozen=True)
class Firmware(_Part):
    """The C library's files: ``model.mebin`` and the same bytes as a C header (None: not exported)."""

    mebin: str | None = None
    h: str | None = None


@dataclass(frozen=True)
class GraphOps(_Part):
    """Operator types of one graph with their counts, and those outside TensorRT's set."""

    ops: dict[str, int]
    outside_tensorrt: tuple[str, ...]


@dataclass(frozen=True)
class DeviceFit(_Part):
    """Whether the bundle fits one device profile, as checked at export."""

    fits: bool
    problems: tuple[str, ...]
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Activations(_Part):
    """Upper bound on a graph's activation memory: ``fixed_bytes + per_sample_bytes * n``."""

    fixed_bytes: int
    per_sample_bytes: int
    unsized_tensors: int


@dataclass(frozen=True)
class GraphFootprint(_Part):
    """One graph's constants and activation bound."""

    weights_bytes: int
    fixed_bytes: int
    per_sample_bytes: int
    unsized_tensors: int


@dataclass(frozen=True)
class NativeFootprint(_Part):
    """Firmware: ``model.mebin``'s size (flash) and the C library's arena for ``max_shots`` samples (RAM)."""

    mebin_bytes: int
    max_shots: int
    arena_bytes: int


@dataclass(frozen=True)
class Footprint(_Part):
    """Memory the bundle needs on a device, measured from its graphs at export (``export/footprint.py``)."""

    shots: int
    weights_bytes: int
    activations: Activations
    graphs: dict[str, GraphFootprint]
    #: None: no model.mebin, or the C library was not built where the bundle was exported
    native: NativeFootprint | None = None


@dataclass(frozen=True)
class Provenance(_Part):
    """Where the bundle came from."""

    run: str
    git_commit: str | None
    metaedge_version: str
    created: str
    #: the run's training config (opaque here: the server's ``TrainConfig``)
    train: dict[str, Any]


@dataclass(frozen=True)
class OnnxParity(_Part):
    """What the export check measured between ONNX Runtime and PyTorch (``docs/bundle.md``)."""

    max_relative_difference: float
    worst_at: str
    median_relative_difference: float
    comparisons: int
    tolerance: float
    kink_tolerance: float


@dataclass(frozen=True)
class NativeParity(_Part):
    """The C library against ONNX Runtime (or PyTorch for C-only bundles) after the default steps."""

    max_abs_difference: float
    max_scaled_difference: float
    worst_at: str
    steps: int
    tasks: int
    reference: str


@dataclass(frozen=True)
class TensorRTEngines(_Part):
    """The TensorRT plans built for one device profile."""

    engines: dict[str, str]
    outputs: dict[str, tuple[str, ...]]
    tensorrt_version: str
    precision: dict[str, str]
    max_shots: int
    max_batch: int
    #: the dtype the Refitter must be given the forward engine's weights in
    forward_weights_dtype: Literal["float32", "float16"] = "float32"


@dataclass(frozen=True)
class Manifest(_Part):
    """A bundle's ``manifest.json``."""

    format_version: int
    task_kind: TaskKind
    loss: str
    algo: str
    #: the task family's own description (opaque here)
    family: dict[str, Any]
    input: InputSpec
    output: OutputSpec
    normalization: Normalization
    adaptation: Adaptation
    graphs: Graphs
    #: ``{file name: sha256}`` of every other file of the bundle
    files: dict[str, str]
    provenance: Provenance
    firmware: Firmware = field(default_factory=Firmware)
    #: why the bundle has no C format (``--format auto`` on a model the C library does not support)
    firmware_skipped: str | None = None
    ops: dict[str, GraphOps] = field(default_factory=dict)
    devices: dict[str, DeviceFit] = field(default_factory=dict)
    footprint: Footprint | None = None
    parity: OnnxParity | None = None
    #: repeats ``parity.max_relative_difference`` (the first format-1 bundles had only this)
    parity_max_relative_difference: float | None = None
    native_parity: NativeParity | None = None
    tensorrt: dict[str, TensorRTEngines] = field(default_factory=dict)
    #: regression bundles: predictive intervals (None: exported before they existed, or not fitted)
    uncertainty: Uncertainty | None = None
    #: dynamics bundles: the model-predictive controller a device runs with the adapted model
    control: Control | None = None

    @classmethod
    def parse(cls, data: Any) -> Manifest:
        """Untrusted decoded JSON as a manifest; :class:`ManifestError` (one sentence) when it is not one."""
        if not isinstance(data, dict):
            raise ManifestError(f"manifest.json must hold a JSON object, got {_json_type(data)}; {_REEXPORT}")
        if "format_version" not in data:
            raise ManifestError(f"manifest field format_version is missing; {_REEXPORT}")
        version = data["format_version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ManifestError(f"manifest field format_version must be a positive integer, got {version!r}; "
                                f"{_REEXPORT}")
        if version > FORMAT_VERSION:
            raise ManifestError(f"the bundle has format version {version} but this runtime reads up to "
                                f"{FORMAT_VERSION}; upgrade metaedge on the device or export with an older metaedge")
        return cls._read(data, "")

    def to_json(self) -> str:
        """The manifest as ``manifest.json`` text."""
        return json.dumps(self._write(), indent=2) + "\n"

    def _problems(self) -> Iterator[tuple[str, str]]:
        for name, digest in self.files.items():
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                yield f"files.{name}", "must be a lower-case hex sha256"
        named = [("the runtime", "theta0.npy"), ("the runtime", "rates.npy")]
        named += [(f"graphs.{r}", f) for r, f in self.graphs.files().items()]
        named += [(f"firmware.{k}", f) for k in ("mebin", "h") if (f := getattr(self.firmware, k)) is not None]
        named += [(f"tensorrt.{d}.engines.{r}", f) for d, e in self.tensorrt.items() for r, f in e.engines.items()]
        for where, name in named:
            if name not in self.files:
                yield f"files.{name}", f"is missing ({where} needs it)"
        graphs = self.graphs.files()
        if graphs and self.graphs.forward is None:
            yield "graphs.forward", f"is missing ({', '.join(f'graphs.{r}' for r in graphs)} need it)"
        if self.uncertainty is not None and len(self.uncertainty.noise_scale) != self.output.dim:
            yield "uncertainty.noise_scale", f"must hold one number per output ({self.output.dim})"
        if self.control is not None and (self.input.shape, self.output.dim) != (
                (self.control.state_dim + self.control.action_dim,), self.control.state_dim):
            yield "control.state_dim", (f"and control.action_dim must match the model: {self.control.state_dim} + "
                                        f"{self.control.action_dim} inputs (state, action) and "
                                        f"{self.control.state_dim} outputs (the state change)")
        step = {"sgd": "adapt_step", "gauss-newton": "gauss_newton"}.get(self.adaptation.solver)
        if graphs and step and getattr(self.graphs, step) is None:
            yield f"graphs.{step}", f"is missing (the {self.adaptation.solver} solver needs it)"

    # --- what devices/ consults (the ``metaedge.devices.fit.BundleTraits`` protocol) ------------------------------
    @property
    def classification(self) -> bool:
        return self.task_kind == "classification"

    @property
    def has_mebin(self) -> bool:
        return self.firmware.mebin is not None

    @property
    def has_graphs(self) -> bool:
        return self.graphs.forward is not None

    @property
    def operators(self) -> frozenset[str]:
        """Every operator type the bundle's graphs use."""
        return frozenset(op for report in self.ops.values() for op in report.ops)

    @property
    def tensorrt_devices(self) -> frozenset[str]:
        return frozenset(self.tensorrt)

    @property
    def inner_steps(self) -> int:
        return self.adaptation.inner_steps

    @property
    def state_size(self) -> int:
        return self.adaptation.size
