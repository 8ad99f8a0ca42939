"""Which ONNX operators each backend runs, as data the runtime and the exporter share (standard library only).

``TENSORRT_OPS`` is the ONNX operators the TensorRT 10 ONNX parser documents as supported (onnx-tensorrt
``docs/operators.md``) that matter for the layers metaedge exports. An operator outside it does not mean a graph
cannot run on a Jetson (ONNX Runtime's CUDA and CPU providers are there), only that a TensorRT engine would need a
plugin or a fallback. ONNX Runtime's CPU provider runs every standard ONNX operator.
"""

from __future__ import annotations

TENSORRT_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GroupNormalization", "HardSigmoid",
    "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad", "Pow",
    "PRelu", "Range", "Reciprocal", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ScatterElements", "ScatterND",
    "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze",
    "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where", "Xor",
})


#: operators whose listed inputs TensorRT needs as build-time constants (initializers or Constant outputs): a value
#: computed at run time there cannot become an engine; by input position
TENSORRT_CONSTANT_INPUTS = {"TopK": (1,), "Pad": (1,), "Resize": (1, 2, 3), "Clip": (1, 2)}


def outside_tensorrt(ops: dict[str, int] | list[str]) -> list[str]:
    """The operators (types, ``domain::type`` for non-standard domains) that a TensorRT engine cannot hold."""
    return sorted(op for op in ops if op not in TENSORRT_OPS)
