"""Run -> ``model.mebin`` + ``model_data.h`` for the C runtime (``runtime/c``, format in ``docs/firmware.md``).

Only what the C library implements is exported: MLPs (dense layers with relu / tanh / sigmoid, optional linear
skip path) adapted by SGD with per-parameter rates (maml, fomaml, metasgd, anil, reptile), by damped Gauss-Newton
(ridge), or used as the embedding of a prototype head (protonet). Anything else is refused with the offending layer
named, before a byte is written.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from torch import nn

from ..sdk.models.mlp import MLP
from ..sdk.train import Run

#: model.mebin format version this exporter writes (the C library's ME_FORMAT_VERSION)
FORMAT_VERSION = 1
MAGIC = b"MEBN"
HEADER_BYTES = 64
LAYER_BYTES = 16

LAYER_KINDS = {"dense": 1, "relu": 2, "tanh": 3, "sigmoid": 4, "skip": 5}
ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
TASKS = {"regression": 0, "classification": 1}
LOSSES = {"mse": 0, "cross_entropy": 1}
SOLVERS = {"sgd": 0, "gauss-newton": 1, "prototypes": 2}
ADAPT_WEIGHT, ADAPT_BIAS = 1, 2
SUPPORTED_ALGOS = ("maml", "fomaml", "metasgd", "anil", "reptile", "ridge", "protonet")


def _refuse(what: str) -> ValueError:
    return ValueError(f"{what} is not supported by the C runtime (firmware takes MLPs with relu, tanh or sigmoid "
                      "activations and an optional linear skip); retrain with --model mlp --activation relu|tanh|"
                      "sigmoid, or export with --format onnx")


def _layers(model: nn.Module) -> list[tuple[str, str, nn.Linear | None]]:
    """``[(kind, parameter prefix, linear)]`` in model order, or a ValueError naming the first unsupported layer."""
    if not isinstance(model, MLP):
        for name, module in model.named_modules():
            if name and not isinstance(module, (nn.Sequential, nn.Linear, *ACTIVATIONS)) and \
                    not list(module.children()):
                raise _refuse(f"layer {name!r} ({type(module).__name__}) of {type(model).__name__}")
        raise _refuse(f"model {type(model).__name__}")
    layers: list[tuple[str, str, nn.Linear | None]] = []
    for i, module in enumerate(model.body):
        if isinstance(module, nn.Linear):
            layers.append(("dense", f"body.{i}", module))
        elif type(module) in ACTIVATIONS:
            layers.append((ACTIVATIONS[type(module)], f"body.{i}", None))
        else:
            raise _refuse(f"activation {type(module).__name__} (layer 'body.{i}')")
    if model.head is not None:
        layers.append(("dense", "head", model.head))
    if model.skip is not None:
        layers.append(("skip", "skip", model.skip))
    return layers


def _solver(run: Run) -> str:
    algo = run.learner.algo
    if algo not in SUPPORTED_ALGOS:
        raise ValueError(f"learner {algo!r} is not supported by the C runtime; firmware takes "
                         f"{', '.join(SUPPORTED_ALGOS)}")
    return {"ridge": "gauss-newton", "protonet": "prototypes"}.get(algo, "sgd")


def firmware_bytes(run: Run, inner_steps: int | None = None) -> bytes:
    """The ``model.mebin`` image of ``run`` (see docs/firmware.md for the layout)."""
    learner, state, family = run.learner, run.state, run.family
    solver = _solver(run)
    layers = _layers(learner.model)
    params = state["params"]
    adapted = list(learner.adapted)
    in_dim = int(np.prod(family.input_shape))
    out_dim = next(lin.out_features for kind, _, lin in reversed(layers) if lin is not None)
    task = family.task_kind
    norm = run.normalizer
    ny = out_dim if task == "regression" else 0
    if len(norm.x_mean) != in_dim or len(norm.y_mean) != ny:
        raise ValueError(f"the run's normalisation has {len(norm.x_mean)} input / {len(norm.y_mean)} target entries, "
                         f"the model {in_dim} / {ny}; retrain the run")

    table, values, theta_order = [], [], []
    for kind, prefix, lin in layers:
        flags = 0
        if lin is not None:
            for suffix, flag in (("weight", ADAPT_WEIGHT), ("bias", ADAPT_BIAS)):
                name = f"{prefix}.{suffix}"
                values.append(params[name].detach().cpu().numpy().astype(np.float32).ravel())
                if name in adapted:
                    flags |= flag
                    theta_order.append(name)
            table.append(struct.pack("<BBHIII", LAYER_KINDS[kind], flags, 0, lin.in_features, lin.out_features, 0))
        else:
            width = layers_width(table)
            table.append(struct.pack("<BBHIII", LAYER_KINDS[kind], 0, 0, width, width, 0))
    if theta_order != adapted:  # the C layout rule: adapted tensors in layer order, weight before bias
        raise ValueError(f"adapted parameters {adapted} are not in layer order; the C runtime cannot hold them")
    if solver == "prototypes" and adapted:
        raise ValueError("prototype heads adapt no parameters")
    rates = [state["rates"][n].detach().cpu().numpy().astype(np.float32).ravel() for n in adapted]
    steps = 0 if solver == "prototypes" else int(learner.inner_steps if inner_steps is None else inner_steps)
    if not 0 <= steps <= 0xFFFF:
        raise ValueError(f"default steps must be in 0..65535, got {steps}")

    def floats(parts: list[np.ndarray]) -> bytes:
        return np.concatenate([np.zeros(0, np.float32), *parts]).astype("<f4").tobytes()

    norm_bytes = floats([np.asarray(v, np.float32) for v in (norm.x_mean, norm.x_std)] +
                        ([np.asarray(v, np.float32) for v in (norm.y_mean, norm.y_std)] if ny else []))
    param_bytes, rate_bytes = floats(values), floats(rates)
    n_params, n_theta = len(param_bytes) // 4, len(rate_bytes) // 4
    off_layers = HEADER_BYTES
    off_norm = off_layers + LAYER_BYTES * len(table)
    off_params = off_norm + len(norm_bytes)
    off_rates = off_params + len(param_bytes)
    total = off_rates + len(rate_bytes)
    loss = LOSSES[learner.loss_name]
    rest = struct.pack("<BBBBHHIIIIIIIIII", TASKS[task], loss, SOLVERS[solver], 0, len(table), steps, in_dim,
                       out_dim, n_params, n_theta, off_layers, off_norm, off_params, off_rates, 0, 0)
    payload = rest + b"".join(table) + norm_bytes + param_bytes + rate_bytes
    head = MAGIC + struct.pack("<HHII", FORMAT_VERSION, HEADER_BYTES, total, zlib.crc32(payload) & 0xFFFFFFFF)
    data = head + payload
    assert len(data) == total
    return data


def layers_width(table: list[bytes]) -> int:
    """Output width of the last entry of a packed layer table (activations keep their input's width)."""
    return struct.unpack("<BBHIII", table[-1])[4]


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
                   inner_steps: int | None = None) -> list[Path]:
    """Write ``model.mebin`` and ``model_data.h`` (the same bytes as a C array) for ``run`` into ``out_dir``.

    Args:
        run: a loaded run (:meth:`metaedge.sdk.train.Run.load`).
        out_dir: an existing or new directory.
        adapt: adaptation spec override (``all``, ``head``, ``biases`` or name patterns), as the learner's ``adapt``.
        inner_steps: default step count stored in the file (default: the run's inner steps).

    Returns:
        ``[model.mebin, model_data.h]`` paths. Raises ``ValueError`` naming the layer, activation or learner the
        C runtime does not support.
    """
    if adapt:
        run = run.with_adaptation(adapt)
    data = firmware_bytes(run, inner_steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mebin, header = out_dir / "model.mebin", out_dir / "model_data.h"
    mebin.write_bytes(data)
    header.write_text(c_array(data))
    return [mebin, header]
