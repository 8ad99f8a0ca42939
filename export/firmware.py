"""Run -> ``model.mebin`` + ``model_data.h`` for the C runtime (``runtime/c``, format in ``docs/firmware.md``).

Only what the C library implements is exported: MLPs (dense layers with relu / tanh / sigmoid, optional linear
skip path) adapted by SGD with per-parameter rates (maml, fomaml, metasgd, anil, reptile), by damped Gauss-Newton
(ridge), or used as the embedding of a prototype head (protonet); and 1-D conv nets (``ConvNet(dims=1)``: Conv1d
k=3 p=1, batch norm folded into it at export, MaxPool1d(2) and ReLU in either order) as prototype embeddings only.
Anything else is refused with the offending layer named, before a byte is written.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import InputError
from ..runtime import native
from ..runtime.manifest import Control, Uncertainty
from ..sdk.models.conv import ConvNet
from ..sdk.models.mlp import MLP
from ..sdk.run import Run

#: newest model.mebin format version this exporter writes (the C library's ME_FORMAT_VERSION); each file gets the
#: lowest version that holds it: 5 for dynamics models with a control part (the control section, a 68-byte
#: header), 4 for Gauss-Newton with fitted intervals (the interval section), 3 for other Gauss-Newton files (their
#: min_damping field), 2 for conv / pool layers, else 1
FORMAT_VERSION = 5
PLANNERS = {"random-shooting": 0, "cem": 1}
MAGIC = b"MEBN"
HEADER_BYTES = 64
LAYER_BYTES = 16

LAYER_KINDS = {"dense": 1, "relu": 2, "tanh": 3, "sigmoid": 4, "skip": 5, "conv1d": 6, "maxpool1d": 7}
ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
# the C library's enum codes, in one place (runtime/native.py) for the writer here and the reader there
TASKS = {name: code for code, name in enumerate(native.TASKS)}
LOSSES = {name: code for code, name in enumerate(native.LOSSES)}
SOLVERS = {name: code for code, name in enumerate(native.SOLVERS)}
ADAPT_WEIGHT, ADAPT_BIAS = 1, 2


def _refuse(what: str) -> InputError:
    return InputError(f"{what} is not supported by the C runtime (firmware takes MLPs with relu, tanh or sigmoid "
                      "activations and an optional linear skip, and 1-D conv nets in prototype bundles); retrain with "
                      "--model mlp --activation relu|tanh|sigmoid, or export with --format onnx")


@dataclass
class _Layer:
    """One layer-table entry: kind, widths (conv / pool: channels x length), the input length of conv / pool
    entries, and for parameterised kinds the parameter prefix and the float32 weight and bias to write."""

    kind: str
    in_w: int
    out_w: int
    length: int = 0
    prefix: str | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    folded: bool = False  # a conv that has taken its batch norm


def _array(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _layers(run: Run) -> list[_Layer]:
    """The layer table of the run's model, or an InputError naming the first unsupported layer."""
    model, params = run.learner.model, run.state["params"]
    if isinstance(model, ConvNet):
        return _conv_layers(run)
    if not isinstance(model, MLP):
        for name, module in model.named_modules():
            if name and not isinstance(module, (nn.Sequential, nn.Linear, *ACTIVATIONS)) and \
                    not list(module.children()):
                raise _refuse(f"layer {name!r} ({type(module).__name__}) of {type(model).__name__}")
        raise _refuse(f"model {type(model).__name__}")

    def dense(kind: str, prefix: str, lin: nn.Linear) -> _Layer:
        return _Layer(kind, lin.in_features, lin.out_features, prefix=prefix, weight=_array(params[f"{prefix}.weight"]),
                      bias=_array(params[f"{prefix}.bias"]))

    layers: list[_Layer] = []
    width = int(np.prod(run.family.input_shape))
    for i, module in enumerate(model.body):
        if isinstance(module, nn.Linear):
            layers.append(dense("dense", f"body.{i}", module))
            width = module.out_features
        elif type(module) in ACTIVATIONS:
            layers.append(_Layer(ACTIVATIONS[type(module)], width, width))
        else:
            raise _refuse(f"activation {type(module).__name__} (layer 'body.{i}')")
    if model.head is not None:
        layers.append(dense("dense", "head", model.head))
    if model.skip is not None:
        layers.append(dense("skip", "skip", model.skip))
    return layers


def _relu_before_pool(children: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The body's layers with each max-pool that a ReLU follows put after that ReLU: the same function (ReLU is
    monotone), and the C library then runs the ReLU inside the convolution's loop before it."""
    out = list(children)
    for i in range(len(out) - 1):
        if isinstance(out[i][1], nn.MaxPool1d) and isinstance(out[i + 1][1], nn.ReLU):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _conv_layers(run: Run) -> list[_Layer]:
    """A 1-D ConvNet embedding (ProtoNets): Conv1d k=3 p=1 (batch norm in eval mode folded into its weight and
    bias), ReLU / tanh / sigmoid, MaxPool1d(2), then torch's flatten(1) order, which the C layout keeps."""
    model, params, buffers = run.learner.model, run.state["params"], run.state.get("buffers", {})
    for name, module in model.body.named_children():
        if isinstance(module, nn.Conv2d):
            raise _refuse(f"layer 'body.{name}' (Conv2d) of {type(model).__name__}")
        if isinstance(module, nn.Conv1d) and run.learner.device_solver.kind != "prototypes":
            raise InputError(f"layer 'body.{name}' (Conv1d): the C runtime runs 1-D convolutions in prototype "
                             f"(ProtoNet) bundles only, not with the {run.learner.name!r} learner (no convolution "
                             "gradients on the device); retrain with --algo protonet, or export with --format onnx")
    channels, length = (int(v) for v in run.family.input_shape)
    layers: list[_Layer] = []
    for name, module in _relu_before_pool(list(model.body.named_children())):
        where = f"layer 'body.{name}' ({type(module).__name__})"
        prefix = f"body.{name}"
        if isinstance(module, nn.Conv1d):
            if (tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation), module.groups,
                    module.padding_mode) != ((3,), (1,), (1,), 1, "zeros") or \
                    module.padding not in ((1,), 1) or module.bias is None or module.in_channels != channels:
                raise InputError(f"{where}: the C runtime runs Conv1d with kernel 3, stride 1, padding 1, a bias "
                                 "and no groups or dilation only; export with --format onnx")
            layers.append(_Layer("conv1d", channels * length, module.out_channels * length, length, prefix,
                                 _array(params[f"{prefix}.weight"]), _array(params[f"{prefix}.bias"])))
            channels = module.out_channels
        elif isinstance(module, nn.BatchNorm1d):
            conv = layers[-1] if layers else None
            stats = [buffers.get(f"{prefix}.{k}") for k in ("running_mean", "running_var")]
            if conv is None or conv.kind != "conv1d" or conv.folded:
                raise InputError(f"{where}: the C runtime folds batch norm into the convolution right before it; "
                                 "there is none here; export with --format onnx")
            if any(v is None for v in stats):
                raise InputError(f"{where}: batch norm without running statistics cannot be folded for the C "
                                 "runtime; retrain with --algo protonet, or export with --format onnx")
            mean, var = (_array(v) for v in stats)
            gamma = _array(params[f"{prefix}.weight"]) if module.affine else np.ones_like(mean)
            beta = _array(params[f"{prefix}.bias"]) if module.affine else np.zeros_like(mean)
            scale = gamma / np.sqrt(var + module.eps)  # eval mode: y = (conv(x) - mean) * scale + beta
            conv.weight = conv.weight * scale[:, None, None]
            conv.bias = (conv.bias - mean) * scale + beta
            conv.folded = True
        elif isinstance(module, nn.GroupNorm):
            raise InputError(f"{where}: the C runtime has no group norm (it folds batch norm into the "
                             "convolutions); retrain with --norm batch or --norm none, or export with --format onnx")
        elif isinstance(module, nn.Identity):
            continue
        elif type(module) in ACTIVATIONS:
            layers.append(_Layer(ACTIVATIONS[type(module)], channels * length, channels * length))
        elif isinstance(module, nn.MaxPool1d):
            size = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
            stride = module.stride if module.stride is not None else module.kernel_size
            if (size(module.kernel_size), size(stride), size(module.padding), size(module.dilation),
                    module.ceil_mode, module.return_indices) != (2, 2, 0, 1, False, False) or length < 2:
                raise InputError(f"{where}: the C runtime runs MaxPool1d(2) (stride 2, no padding, floor) on "
                                 "lengths of at least 2 only; export with --format onnx")
            layers.append(_Layer("maxpool1d", channels * length, channels * (length // 2), length))
            length //= 2
        else:
            raise _refuse(where)
    if model.head is not None:
        layers.append(_Layer("dense", model.head.in_features, model.head.out_features, prefix="head",
                             weight=_array(params["head.weight"]), bias=_array(params["head.bias"])))
    return layers


def control_section(control: Control, in_dim: int, out_dim: int) -> bytes:
    """The format-5 control section (docs/firmware.md): 48 bytes of counts, seed and dt, then ``action_low``,
    ``action_high``, ``target`` as float32, ``q``, ``r`` as float64 (the planner's costs are float64) and ``wrap``
    as u32; refused unless the model maps ``state_dim + action_dim`` inputs to ``state_dim`` outputs."""
    c = control
    if (c.state_dim + c.action_dim, c.state_dim) != (in_dim, out_dim):
        raise InputError(f"the control part's state_dim {c.state_dim} and action_dim {c.action_dim} do not fit the "
                         f"model ({in_dim} inputs, {out_dim} outputs); fix the control section of the config")
    limits = (("horizon", c.horizon, native.MAX_HORIZON), ("candidates", c.candidates, native.MAX_CANDIDATES),
              ("iterations", c.iterations, native.MAX_ITERATIONS), ("window", c.window, 65536),
              ("wrap", len(c.wrap), 255))
    for name, value, top in limits:
        if value > top:
            raise InputError(f"the control part's {name} ({value}) exceeds the C library's limit of {top}; lower it "
                             "or export with --format onnx")
    fixed = struct.pack("<IIBBHIIIIIIQf", c.state_dim, c.action_dim, PLANNERS[c.planner], len(c.wrap), 0,
                        c.horizon, c.candidates, c.iterations, c.elites, c.window, c.adapt_every, c.seed % 2**64,
                        c.dt)
    return fixed + np.asarray([*c.action_low, *c.action_high, *c.target], "<f4").tobytes() + \
        np.asarray([*c.q, *c.r], "<f8").tobytes() + np.asarray(c.wrap, "<u4").tobytes()


def firmware_bytes(run: Run, inner_steps: int | None = None, uncertainty: Uncertainty | None = None,
                   control: Control | None = None) -> bytes:
    """The ``model.mebin`` image of ``run`` (see docs/firmware.md for the layout); ``uncertainty`` (Gauss-Newton
    only): the fitted intervals, written as the format-4 interval section; ``control`` (dynamics models): the
    planner and device loop the C library's ``me_plan`` / ``me_observe`` run, written as the format-5 control
    section."""
    learner, state, family = run.learner, run.state, run.family
    layers = _layers(run)
    solver = learner.device_solver
    if solver.kind not in SOLVERS:
        raise InputError(f"the {learner.name} learner's device solver {solver.kind!r} is not in the C runtime; "
                         f"firmware takes the solvers {', '.join(SOLVERS)}")
    adapted = list(learner.adapted)
    in_dim = int(np.prod(family.input_shape))
    out_dim = layers[-1].out_w
    task = family.task_kind
    norm = run.normalizer
    ny = out_dim if task == "regression" else 0
    if len(norm.x_mean) != in_dim or len(norm.y_mean) != ny:
        raise InputError(f"the run's normalisation has {len(norm.x_mean)} input / {len(norm.y_mean)} target entries, "
                         f"the model {in_dim} / {ny}; retrain the run")
    if layers[0].in_w != in_dim:
        raise InputError(f"the model takes {layers[0].in_w} inputs, the family {in_dim}; retrain the run")

    table, values, theta_order = [], [], []
    for layer in layers:
        flags = 0
        if layer.prefix is not None:
            for suffix, flag, value in (("weight", ADAPT_WEIGHT, layer.weight), ("bias", ADAPT_BIAS, layer.bias)):
                name = f"{layer.prefix}.{suffix}"
                values.append(np.asarray(value).astype(np.float32).ravel())
                if name in adapted:
                    flags |= flag
                    theta_order.append(name)
        field = {"conv1d": 3, "maxpool1d": 2}.get(layer.kind, 0)  # kernel size / pool window
        table.append(struct.pack("<BBHIII", LAYER_KINDS[layer.kind], flags, field, layer.in_w, layer.out_w,
                                 layer.length))
    if theta_order != adapted:  # the C layout rule: adapted tensors in layer order, weight before bias
        raise InputError(f"adapted parameters {adapted} are not in layer order; the C runtime cannot hold them")
    if solver.kind == "prototypes" and adapted:
        raise InputError("prototype heads adapt no parameters")
    # the lowest version that holds the model: MLP files stay readable by version-1 firmware; Gauss-Newton files
    # carry the solver's damping floor (version 3), so the C library does not hard-code it
    gauss_newton = solver.kind == "gauss-newton"
    if uncertainty is not None and not gauss_newton:
        raise InputError("the C library's intervals are for Gauss-Newton (ridge) models only")
    version = 5 if control is not None else (4 if uncertainty is not None else 3) if gauss_newton else \
        2 if any(layer.kind in ("conv1d", "maxpool1d") for layer in layers) else 1
    if control is not None and (task != "regression" or solver.kind == "prototypes"):
        raise InputError("a control part needs a regression dynamics model adapted by sgd or gauss-newton")
    header_bytes = HEADER_BYTES + 4 if version >= 5 else HEADER_BYTES  # version 5: the control offset at 64
    damping = struct.pack("<f", solver.min_damping) if gauss_newton else bytes(4)
    rates = [state["rates"][n].detach().cpu().numpy().astype(np.float32).ravel() for n in adapted]
    steps = solver.steps if inner_steps is None or solver.kind == "prototypes" else int(inner_steps)
    if not 0 <= steps <= 0xFFFF:
        raise InputError(f"default steps must be in 0..65535, got {steps}")

    def floats(parts: list[np.ndarray]) -> bytes:
        return np.concatenate([np.zeros(0, np.float32), *parts]).astype("<f4").tobytes()

    norm_bytes = floats([np.asarray(v, np.float32) for v in (norm.x_mean, norm.x_std)] +
                        ([np.asarray(v, np.float32) for v in (norm.y_mean, norm.y_std)] if ny else []))
    param_bytes, rate_bytes = floats(values), floats(rates)
    n_params, n_theta = len(param_bytes) // 4, len(rate_bytes) // 4
    off_layers = header_bytes
    off_norm = off_layers + LAYER_BYTES * len(table)
    off_params = off_norm + len(norm_bytes)
    off_rates = off_params + len(param_bytes)
    unc_bytes = b""
    if uncertainty is not None:
        unc_bytes = struct.pack("<I", len(uncertainty.levels)) + floats(
            [np.asarray(v, np.float32) for v in (uncertainty.noise_scale, uncertainty.levels, uncertainty.factors)])
    off_unc = off_rates + len(rate_bytes) if unc_bytes else 0
    ctl_bytes = control_section(control, in_dim, out_dim) if control is not None else b""
    off_ctl = off_rates + len(rate_bytes) + len(unc_bytes)
    total = off_ctl + len(ctl_bytes)
    loss = LOSSES[learner.loss_name]
    rest = struct.pack("<BBBBHHIIIIIIII", TASKS[task], loss, SOLVERS[solver.kind], 0, len(table), steps, in_dim,
                       out_dim, n_params, n_theta, off_layers, off_norm, off_params, off_rates) + damping + \
        struct.pack("<I", off_unc) + (struct.pack("<I", off_ctl) if version >= 5 else b"")
    payload = rest + b"".join(table) + norm_bytes + param_bytes + rate_bytes + unc_bytes + ctl_bytes
    head = MAGIC + struct.pack("<HHII", version, header_bytes, total, zlib.crc32(payload) & 0xFFFFFFFF)
    data = head + payload
    assert len(data) == total
    return data


def c_array(data: bytes, name: str = "me_model_data") -> str:
    """``data`` as a C header: a 4-byte aligned ``const unsigned char`` array and its length."""
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    body = ",\n    ".join(rows)
    guard = f"{name.upper()}_H"
    return (f"/* model.mebin ({len(data)} bytes) written by metaedge.export.firmware; do not edit. */\n"
            f"#ifndef {guard}\n#define {guard}\n\n"
            f"#if defined(__GNUC__)\n__attribute__((aligned(4)))\n#endif\n"
            f"static const unsigned char {name}[{len(data)}] = {{\n    {body}\n}};\n"
            f"static const unsigned int {name}_len = {len(data)}u;\n\n#endif\n")


def write_firmware(run: Run, out_dir: str | Path, adapt: str | None = None,
                   inner_steps: int | None = None, uncertainty: Uncertainty | None = None,
                   control: Control | None = None) -> list[Path]:
    """Write ``model.mebin`` and ``model_data.h`` (the same bytes as a C array) for ``run`` into ``out_dir``.

    Args:
        run: a loaded run (:meth:`metaedge.sdk.train.Run.load`).
        out_dir: an existing or new directory.
        adapt: adaptation spec override (``all``, ``head``, ``biases`` or name patterns), as the learner's ``adapt``.
        inner_steps: default step count stored in the file (default: the run's inner steps).
        uncertainty: fitted intervals of a Gauss-Newton model (format 4's interval section).
        control: a dynamics bundle's control part (``export.bundle.control_part``; format 5's control section).

    Returns:
        ``[model.mebin, model_data.h]`` paths. Raises ``InputError`` naming the layer, activation or learner the
        C runtime does not support.
    """
    if adapt:
        run = run.with_adaptation(adapt)
    data = firmware_bytes(run, inner_steps, uncertainty, control)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mebin, header = out_dir / "model.mebin", out_dir / "model_data.h"
    atomic_write_bytes(mebin, data)
    atomic_write_text(header, c_array(data))
    return [mebin, header]
