"""How much memory a bundle needs on a device, measured from its graphs at export (the manifest's ``footprint``).

- ``weights_bytes``: the constants inside all the bundle's graphs (the runtime loads them all at once).
- ``activations``: an upper bound for the largest graph: every intermediate tensor alive at once (no buffer
  reuse), as ``fixed_bytes + per_sample_bytes * n``. ONNX shape inference is run with the sample axis set to 1 and
  to 2; the difference is the per-sample part. Tensors whose shape inference cannot size count as zero, and the
  count says how many there were.
- ``native``: for firmware bundles, ``model.mebin``'s size (flash) and the C library's arena for ``max_shots``
  samples (RAM), asked from the C library itself when it is built here.

``metaedge.devices.fit`` compares these with a profile's budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from ..runtime.manifest import Activations, Firmware, Footprint, GraphFootprint, Graphs, NativeFootprint

_SIZES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.FLOAT16: 2,
          onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4,
          onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1, onnx.TensorProto.BOOL: 1}


def _weights_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        total += int(np.prod(init.dims, dtype=np.int64)) * _SIZES.get(init.data_type, 4)
    for node in model.graph.node:  # Constant nodes hold weights too
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                total += int(np.prod(attr.t.dims, dtype=np.int64)) * _SIZES.get(attr.t.data_type, 4)
    return total


def _activation_bytes(model: onnx.ModelProto, samples: int) -> tuple[int, int]:
    """Bytes of every input, intermediate and output tensor with the dynamic axes set to ``samples``; and how
    many tensors could not be sized."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in m.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param or not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = samples
    inferred = shape_inference.infer_shapes(m, data_prop=True)
    inits = {i.name for i in inferred.graph.initializer}
    total, unknown = 0, 0
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim] if t.HasField("shape") else None
        if dims is None or any(d < 0 for d in dims):
            unknown += 1
            continue
        total += int(np.prod(dims, dtype=np.int64)) * _SIZES.get(t.elem_type, 4)
    return total, unknown


def graph_footprint(path: str | Path) -> GraphFootprint:
    """Constants, activation bound and unsized tensor count of one ONNX file."""
    model = onnx.load(str(path))  # external data next to the file is loaded too
    one, unknown = _activation_bytes(model, 1)
    two, _ = _activation_bytes(model, 2)
    per_sample = max(two - one, 0)
    return GraphFootprint(weights_bytes=_weights_bytes(model), fixed_bytes=max(one - per_sample, 0),
                          per_sample_bytes=per_sample, unsized_tensors=unknown)


def footprint(bundle_dir: str | Path, graphs: Graphs, firmware: Firmware, shots: int, max_shots: int = 64
              ) -> Footprint:
    """The manifest's ``footprint`` for the bundle in ``bundle_dir`` (see the module docstring).

    ``shots`` is the support-set size the run was trained with (the default a device check assumes);
    ``max_shots`` the largest support set the firmware arena is sized for.
    """
    bundle_dir = Path(bundle_dir)
    measured = {name: graph_footprint(bundle_dir / name) for name in graphs.files().values()}
    largest = max(measured.values(), key=lambda g: g.fixed_bytes + g.per_sample_bytes * shots, default=None)
    native = None
    if firmware.mebin:
        from ..runtime import native as clib

        if clib.available():  # the arena size is asked from the C library itself
            data = (bundle_dir / firmware.mebin).read_bytes()
            arena = int(clib.NativeModel(data, max_shots=max_shots).arena_bytes(max_shots))
            native = NativeFootprint(mebin_bytes=len(data), max_shots=int(max_shots), arena_bytes=arena)
    return Footprint(
        shots=int(shots), weights_bytes=sum(g.weights_bytes for g in measured.values()),
        activations=Activations(largest.fixed_bytes, largest.per_sample_bytes, largest.unsized_tensors) if largest
        else Activations(0, 0, 0),
        graphs=measured, native=native)
