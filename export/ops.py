"""Static report of the ONNX operators each bundle graph uses, flagging those outside TensorRT's set.

The set itself lives in ``metaedge.devices.ops`` (data the runtime consults too). This check needs no GPU and no
TensorRT; it runs everywhere.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from ..devices.ops import outside_tensorrt
from ..runtime.manifest import GraphOps


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


def ops_report(bundle: str | Path) -> dict[str, GraphOps]:
    """``{graph file: GraphOps}`` (operator counts, those outside TensorRT's set) for every ``.onnx`` file."""
    report = {}
    for path in sorted(Path(bundle).glob("*.onnx")):
        counts = graph_ops(path)
        report[path.name] = GraphOps(dict(sorted(counts.items())), tuple(outside_tensorrt(counts)))
    return report
