"""Static report of the ONNX operators each bundle graph uses, flagging those outside TensorRT's set.

The set below is the ONNX operators the TensorRT 10 ONNX parser documents as supported (onnx-tensorrt
``docs/operators.md``) that matter for the layers metaedge exports; an operator outside it does not mean the
graph cannot run (ONNX Runtime and the CPU are always there), only that a TensorRT engine would need a plugin
or a fallback. This check needs no GPU and no TensorRT; it runs everywhere.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

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


def graph_ops(path: str | Path) -> Counter:
    """How often each operator type occurs in an ONNX file (including nested subgraphs' nodes)."""
    model = onnx.load(str(path))
    counts: Counter = Counter()
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
            stack += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    for function in model.functions:
        counts.update(n.op_type for n in function.node)
    return counts


def ops_report(bundle: str | Path) -> dict[str, dict]:
    """``{graph file: {"ops": {op: count}, "outside_tensorrt": [ops]}}`` for every ``.onnx`` file of a bundle."""
    report = {}
    for path in sorted(Path(bundle).glob("*.onnx")):
        counts = graph_ops(path)
        report[path.name] = {"ops": dict(sorted(counts.items())),
                             "outside_tensorrt": sorted(op for op in counts if op not in TENSORRT_OPS)}
    return report
