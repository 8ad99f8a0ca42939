"""TensorRT engines for Jetson-class GPUs, built from a bundle's ONNX graphs. Every TensorRT build call is here.

- :func:`static_check` (needs only ``onnx``, runs everywhere): operators outside TensorRT's set, non-standard
  domains, float64 tensors, int64 graph inputs/outputs on TensorRT 8.x, dynamic axes other than the sample axis,
  inputs TensorRT needs as build-time constants.
- :func:`prepare_graphs`: the ONNX files the engines are built from. The forward graph's adapted parameters
  (``theta.*`` graph inputs) become initializers holding ``theta0``, so they are *weights* of a refittable engine
  and an adapted state is applied with the Refitter instead of a rebuild. On TensorRT >= 11, whose networks are
  always strongly typed (the FP16 builder flag is gone), an FP16 forward is the graph converted to float16 here
  (:func:`to_float16`); on TensorRT 8.5/10 the float32 graph is built with ``BuilderFlag.FP16``. Adapt-step
  graphs stay float32: gradient steps in half precision lose the small updates.
- :func:`build_engines` (needs ``tensorrt`` and a GPU): one serialized plan per graph, named
  ``<graph>.<device>.plan``, with an optimization profile over the sample axis (support set: 1..max_shots,
  prediction batch: 1..max_batch).
- :func:`record_engines` lists the plans in the bundle's manifest (``tensorrt.<device>``) with their sha256.

Untested here: no machine in this workplace has TensorRT or a GPU. The static check and the graph rewrites are
tested; the builder calls follow the TensorRT 10 Python API documentation.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..atomic import atomic_write_text
from ..devices.ops import TENSORRT_CONSTANT_INPUTS, outside_tensorrt
from ..devices.profiles import Profile
from ..errors import InputError
from ..runtime.bundle import Bundle, sha256
from ..runtime.manifest import GRAPH_ROLES, TensorRTEngines
from .ops import graph_ops

#: graph inputs whose first axis is the number of samples (support set or prediction batch)
SAMPLE_INPUTS = {"xs": "shots", "ys": "shots", "x": "batch"}
#: roles of a bundle's graphs (the manifest's ``graphs``) that get engines; not ``adapt_predict``, whose forward pass
#: would bypass the refittable forward engine (the TensorRT backend adapts through ``adapt_steps``)
ROLES = tuple(r for r in GRAPH_ROLES if r != "adapt_predict")


def _major(version: str) -> float:
    """``"10.3.0"`` -> 10.0, ``"8.5"`` -> 8.5 (major.minor as a number, for comparisons)."""
    parts = (version.split(".") + ["0"])[:2]
    return float(f"{int(parts[0])}.{int(''.join(c for c in parts[1] if c.isdigit()) or 0)}")


def _profile_tensorrt(profile: Profile) -> str:
    """The newest TensorRT family the profile's JetPack releases ship (the one engines are built for by default)."""
    if not profile.jetpack:
        raise InputError(f"{profile.name} is not a TensorRT device (no JetPack / TensorRT family); choose a Jetson "
                         "profile for --format tensorrt")
    return max((j.tensorrt for j in profile.jetpack), key=_major)


# --- static check (no TensorRT needed) ----------------------------------------------------------------------------

def _constant_names(graph: onnx.GraphProto) -> set[str]:
    return {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def check_graph(path: str | Path, tensorrt_version: str = "10") -> list[str]:
    """Why a TensorRT engine could not be built from the ONNX file at ``path`` (empty when nothing is found)."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    problems = []
    outside = outside_tensorrt(graph_ops(path))
    if outside:
        problems.append(f"{path.name}: operators outside TensorRT's set: {', '.join(outside)}")
    try:
        typed = shape_inference.infer_shapes(model).graph
    except Exception as e:  # noqa: BLE001 - a graph shape inference rejects is a finding, not a crash
        problems.append(f"{path.name}: ONNX shape inference failed ({e})")
        typed = graph
    values = [*typed.input, *typed.output, *typed.value_info]
    doubles = sorted({v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE} |
                     {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.DOUBLE})
    casts = [n.name or n.output[0] for n in graph.node if n.op_type == "Cast" and
             any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute)]
    if doubles or casts:
        problems.append(f"{path.name}: float64 tensors (TensorRT has no double type): "
                        f"{', '.join((doubles + casts)[:8])}")
    if _major(tensorrt_version) < 10:
        io = [*graph.input, *graph.output]
        int64_io = [v.name for v in io if v.type.tensor_type.elem_type == onnx.TensorProto.INT64]
        if int64_io:
            problems.append(f"{path.name}: int64 inputs/outputs {', '.join(int64_io)} (TensorRT {tensorrt_version} has "
                            "no int64 I/O; TensorRT 10 has)")
    inits = {i.name for i in graph.initializer}
    for value in graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if dynamic and (value.name not in SAMPLE_INPUTS or dynamic != [0]):
            problems.append(f"{path.name}: input {value.name} has dynamic axes {dynamic}; only the sample axis (0) of "
                            f"{', '.join(SAMPLE_INPUTS)} gets an optimization profile")
    constants = _constant_names(graph)
    for node in graph.node:
        for position in TENSORRT_CONSTANT_INPUTS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] and node.input[position] not in constants:
                problems.append(f"{path.name}: {node.op_type} {node.name or node.output[0]} takes input {position} "
                                "from a computed value; TensorRT needs it constant")
    return problems


def static_check(bundle_dir: str | Path, profile: Profile) -> list[str]:
    """Every reason the bundle's graphs cannot become TensorRT engines for ``profile`` (empty: they can)."""
    bundle_dir = Path(bundle_dir)
    if profile.backend("tensorrt") is None:
        return [f"{profile.name} has no tensorrt backend; TensorRT engines are for the Jetson profiles"]
    graphs = Bundle.open(bundle_dir, trust=()).manifest.graphs.files()
    if not graphs:
        return ["the bundle has no ONNX graphs (exported with --format c only)"]
    version = _profile_tensorrt(profile)
    return [p for role, name in graphs.items() if role in ROLES for p in check_graph(bundle_dir / name, version)]


# --- graph rewrites (no TensorRT needed) --------------------------------------------------------------------------

def forward_with_weights(model: onnx.ModelProto, theta: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The forward graph with each ``theta.<name>`` input turned into an initializer of that name holding
    ``theta[name]``: TensorRT then treats the adapted parameters as refittable weights."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [v for v in out.graph.input if not v.name.startswith("theta.")]
    names = [v.name for v in out.graph.input if v.name.startswith("theta.")]
    missing = sorted(set(names) - set(theta))
    if missing:
        raise InputError(f"no values for forward inputs {', '.join(missing)}")
    del out.graph.input[:]
    out.graph.input.extend(keep)
    out.graph.initializer.extend(numpy_helper.from_array(np.asarray(theta[n], np.float32), n) for n in names)
    return out


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float16: float32 initializers, Constant values, graph inputs/outputs and
    Cast targets become float16 (intermediate types are re-inferred by TensorRT)."""
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph

    def half(t: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name) if t.data_type == f32 else t

    converted = [half(t) for t in g.initializer]
    del g.initializer[:]
    g.initializer.extend(converted)
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and node.op_type in ("Constant", "ConstantOfShape"):
                attr.t.CopyFrom(half(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == f32:
                attr.i = f16
    for value in [*g.input, *g.output]:
        if value.type.tensor_type.elem_type == f32:
            value.type.tensor_type.elem_type = f16
    del g.value_info[:]
    return out


def prepare_graphs(bundle_dir: str | Path, work: str | Path, tensorrt_version: str, fp16_forward: bool
                   ) -> dict[str, Path]:
    """The ONNX files to build engines from, by role, written under ``work`` (external data made internal)."""
    bundle = Bundle.open(bundle_dir, trust=())  # export's own, not yet signed bundle
    m = bundle.manifest
    theta = m.adaptation.layout.split(bundle.array("theta0.npy").astype(np.float32), "theta.")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, name in m.graphs.files().items():
        if role not in ROLES:
            continue
        model = onnx.load(str(bundle.file(name)))
        if role == "forward":
            model = forward_with_weights(model, theta)
            if fp16_forward and _major(tensorrt_version) >= 11:
                model = to_float16(model)
        out[role] = work / f"{role}.onnx"
        onnx.save(model, str(out[role]))
    return out


# --- building (needs tensorrt and a GPU) -------------------------------------------------------------------------

class TensorRTUnavailable(InputError):
    """TensorRT is not installed here (a user-facing condition: the CLI prints it as one line)."""


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailable("TensorRT is not installed (on a Jetson it comes with JetPack: python3-libnvinfer); "
                           "engines can only be built on the device family they run on") from e
    return tensorrt


def _build_one(trt, onnx_path: Path, role: str, shapes: dict[str, tuple[int, int, int]], fp16: bool,
               workspace: int) -> bytes:
    """One serialized engine. ``shapes``: per sample-axis input, (min, opt, max) of axis 0."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = _major(trt.__version__)
    flags = 0
    if major < 10:  # TensorRT 8.x still needs explicit batch asked for
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major >= 11:  # always strongly typed there (the flag is accepted and ignored); types come from the graph
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT's ONNX parser rejected {role} ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in shapes:
            continue
        rest = tuple(tensor.shape)[1:]
        lo, opt, hi = shapes[tensor.name]
        profile.set_shape(tensor.name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    if role == "forward":
        config.set_flag(trt.BuilderFlag.REFIT)  # adapted states are applied with the Refitter
        if fp16 and major < 11:  # TensorRT 11 removed the flag: the graph itself is float16 there
            config.set_flag(trt.BuilderFlag.FP16)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise InputError(f"TensorRT could not build the {role} engine (see the log above)")
    if role == "forward":
        _check_refittable(trt, logger, bytes(plan), onnx_path)
    return bytes(plan)


def _check_refittable(trt, logger, plan: bytes, onnx_path: Path) -> None:
    """The device refits the forward engine by the names ``theta.<name>``: refuse, here rather than on the
    device, an engine in which the parser or builder folded one of them into another weight."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    names = set(trt.Refitter(engine, logger).get_all_weights())
    wanted = {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.initializer
              if i.name.startswith("theta.")}
    missing = sorted(wanted - names)
    if missing:
        raise InputError(f"the forward engine cannot be refitted by name: {', '.join(missing)} are not among its "
                         "refittable weights (TensorRT folded them); this model needs the ONNX Runtime backend")


def build_engines(bundle_dir: str | Path, profile: Profile, out_dir: str | Path, max_shots: int, max_batch: int
                  ) -> dict[str, Path]:
    """Build one TensorRT plan per graph of the bundle for ``profile``; returns ``{role: plan path}``.

    Refuses (``InputError``) when :func:`static_check` finds a problem, and (``RuntimeError``) without TensorRT.
    """
    if max_shots < 1 or max_batch < 1:
        raise InputError(f"max_shots and max_batch must be >= 1, got {max_shots} and {max_batch}")
    problems = static_check(bundle_dir, profile)
    if problems:
        raise InputError(f"the bundle's graphs cannot become TensorRT engines for {profile.name}: "
                         + "; ".join(problems))
    trt = _import_tensorrt()
    footprint = Bundle.open(bundle_dir, trust=()).manifest.footprint
    shots = footprint.shots if footprint else max_shots  # the run's support size: the profiles' optimum
    fp16 = profile.precision["forward"] == "fp16"
    options = profile.backend("tensorrt").options
    workspace = int(options.get("workspace_bytes", 1 << 28))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = {}
    with tempfile.TemporaryDirectory() as work:
        graphs = prepare_graphs(bundle_dir, work, trt.__version__, fp16)
        for role, path in graphs.items():
            shapes = {"xs": (1, min(shots, max_shots), max_shots), "ys": (1, min(shots, max_shots), max_shots),
                      "x": (1, max_batch, max_batch)}
            plan = _build_one(trt, path, role, shapes, fp16, workspace)
            target = out_dir / f"{role}.{profile.name}.plan"
            target.write_bytes(plan)
            plans[role] = target
    return plans


def record_engines(bundle_dir: str | Path, profile: Profile, plans: dict[str, Path], tensorrt_version: str,
                   max_shots: int, max_batch: int) -> TensorRTEngines:
    """Add the manifest's ``tensorrt.<profile>`` entry (plan file per role, version, precision, limits) and the
    plans' sha256 to the bundle's manifest (rewritten atomically); returns the entry. Plans must lie in the bundle."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / "manifest.json"
    for role, path in plans.items():
        if role not in ROLES or Path(path).resolve().parent != bundle_dir.resolve():
            raise InputError(f"{path}: a {role!r} plan must be one of {', '.join(ROLES)} inside {bundle_dir}")
    manifest = Bundle.open(bundle_dir, trust=()).manifest
    fp16 = profile.precision["forward"] == "fp16"
    graphs = manifest.graphs.files()
    entry = TensorRTEngines(
        engines={role: Path(p).name for role, p in plans.items()},
        # ONNX Runtime returns outputs in graph order and the runtime relies on it; engines keep their own order
        outputs={role: tuple(o.name for o in onnx.load(str(bundle_dir / graphs[role]), load_external_data=False)
                             .graph.output) for role in plans if role in graphs},
        tensorrt_version=tensorrt_version,
        precision=dict(profile.precision),
        # the dtype the Refitter must be given the forward engine's weights in
        forward_weights_dtype="float16" if fp16 and _major(tensorrt_version) >= 11 else "float32",
        max_shots=int(max_shots),
        max_batch=int(max_batch),
    )
    manifest = dataclasses.replace(manifest, tensorrt={**manifest.tensorrt, profile.name: entry},
                                   files={**manifest.files, **{Path(p).name: sha256(Path(p)) for p in plans.values()}})
    atomic_write_text(manifest_path, manifest.to_json())
    return entry


def export_tensorrt(bundle_dir: str | Path, profile: Profile, max_shots: int = 64, max_batch: int = 256
                    ) -> TensorRTEngines:
    """``metaedge export --format tensorrt --device NAME``: build the plans into the bundle and record them."""
    trt = _import_tensorrt()
    plans = build_engines(bundle_dir, profile, bundle_dir, max_shots, max_batch)
    return record_engines(bundle_dir, profile, plans, trt.__version__, max_shots, max_batch)
