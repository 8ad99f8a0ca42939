"""Exact peephole rewrites of traced ONNX graphs: fewer nodes for ONNX Runtime to dispatch.

A traced adaptation step is dozens of tiny operators, and ONNX Runtime spends about 0.3 us on each whatever its
size (docs/results.md, speed section), so on a small MLP the node count, not the FLOPs, sets the latency. The autograd
trace carries nodes that compute nothing new; each rewrite below computes the same float32 values (ONNX Runtime's
own fusions may then round one scaling differently: 7e-9 at most on the sinusoid bundle's outputs), all but the last:

* ``Pow(x, 1)`` (the derivative of a square, ``2 * x ** (2 - 1)``) is ``x``;
* ``Pow(x, 2)`` is ``Mul(x, x)`` (both the correctly rounded square; the multiply kernel is the cheaper one);
* ``ReduceSum`` / ``ReduceMean`` with ``keepdims=1`` whose only consumer is a ``Reshape`` or ``Squeeze`` that drops
  exactly the reduced axes becomes the same reduction with ``keepdims=0`` (a bias gradient, a loss value).

* ``Concat(axis=0)`` of ``Unsqueeze(axes=[0])`` of scalars that full reductions produce (the unrolled graph's
  support losses) becomes the concatenation of the reductions with ``keepdims=1`` (one ``Reshape`` after it
  where their inputs have more than one axis);
* ``Mul(a, Mul(x, c))`` with ``c`` a power of two (the derivative of a square times ``1/n``, once per step)
  becomes ``Mul(x, a * c)``, with ``a * c`` computed once for every such pair: scaling by a power of two is exact,
  so the product is rounded once either way (barring overflow).

* ``Sub(p, Mul(r, g))`` with ``r`` a scalar constant (a step size the export made a constant) and ``g`` a weight
  gradient (a 2-D ``MatMul``, its ``Transpose`` s included) or a bias gradient (a sum over the rows) becomes one
  ``Gemm`` (``alpha = -r``, ``beta = 1``): the update of each parameter is one node instead of three or four. This
  one is not bit-exact: the Gemm rounds its sum in its own order (relative differences of about 1e-7).

The exporter's per-node debug metadata (the FX node, its name scopes and class hierarchy: about 90% of a small
model's graph bytes) is dropped too, which the runtime never reads; the bundle's graphs shrink about tenfold.

Shapes come from ONNX shape inference; a rewrite whose shapes are not all known is skipped. ONNX Runtime's own
optimiser (which fuses the transposes into Gemm / MatMul) still runs on the result when a session loads it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

_REDUCE = ("ReduceSum", "ReduceMean")


def _scalar_constants(graph: onnx.GraphProto) -> dict[str, float]:
    """Initializers and ``Constant`` nodes holding a single float, by name."""
    out: dict[str, float] = {}
    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]
    for name, tensor in tensors:
        value = numpy_helper.to_array(tensor)
        if value.size == 1 and value.dtype.kind == "f":
            out[name] = float(value.ravel()[0])
    return out


def _int_constants(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """Initializers and ``Constant`` nodes holding integers (reduction axes, shapes), by name."""
    out: dict[str, tuple[int, ...]] = {}
    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]
    for name, tensor in tensors:
        value = numpy_helper.to_array(tensor)
        if value.dtype.kind == "i":
            out[name] = tuple(int(v) for v in value.ravel())
    return out


def _typed_shapes(model: onnx.ModelProto) -> tuple[dict[str, tuple[int | str, ...] | None], set[str]]:
    """One shape inference: every value's shape (symbolic dims as their names; None where the rank is unknown),
    and the names of the float32 inputs and intermediate values."""
    g = shape_inference.infer_shapes(model).graph
    out: dict[str, tuple[int | str, ...] | None] = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        if not t.HasField("shape"):
            out[v.name] = None
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        out[v.name] = None if any(d is None for d in dims) else dims
    floats = {v.name for v in [*g.value_info, *g.input] if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return out, floats


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...] | None]:
    """Every value's inferred shape (see :func:`_typed_shapes`)."""
    return _typed_shapes(model)[0]


def _replace(field, items) -> None:
    """Set a repeated protobuf field (nodes, initializers, value infos, graph inputs/outputs) to ``items``."""
    items = list(items)  # read before the field is cleared: items may be a view of it
    del field[:]
    field.extend(items)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _reduced_axes(node: onnx.NodeProto, rank: int, ints: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The axes a reduction node reduces (all where none are given), or None where they are not constant."""
    if len(node.input) < 2 or not node.input[1]:
        return None if _attr(node, "noop_with_empty_axes", 0) else tuple(range(rank))
    axes = ints.get(node.input[1])
    return None if axes is None else tuple(sorted(a % rank for a in axes))


def _set_keepdims(node: onnx.NodeProto, value: int) -> None:
    for a in node.attribute:
        if a.name == "keepdims":
            a.i = value
            return
    node.attribute.append(helper.make_attribute("keepdims", value))


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            out[name].append(node)
    return out


def _stack_scalars(model: onnx.ModelProto) -> int:
    """The ``Concat`` of ``Unsqueeze`` d full-reduction scalars rewrite (in place); returns the nodes removed."""
    graph = model.graph
    shapes, ints, consumers = _shapes(model), _int_constants(graph), _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    drop: set[int] = set()
    added: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (after this node, insert this one)
    for node in graph.node:
        if node.op_type != "Concat" or _attr(node, "axis", 0) != 0:
            continue
        pairs = []
        for name in node.input:
            unsq = producer.get(name)
            red = producer.get(unsq.input[0]) if unsq is not None and unsq.op_type == "Unsqueeze" else None
            if red is None or red.op_type not in _REDUCE or _attr(red, "keepdims", 1) != 0:
                break
            shape_in = shapes.get(red.input[0])
            if (shape_in is None or ints.get(unsq.input[1]) != (0,) or len(consumers[unsq.output[0]]) != 1
                    or len(consumers[red.output[0]]) != 1 or red.output[0] in outputs
                    or _reduced_axes(red, len(shape_in), ints) != tuple(range(len(shape_in)))):
                break
            pairs.append((unsq, red, len(shape_in)))
        if len(pairs) != len(node.input) or len({rank for *_, rank in pairs}) != 1:
            continue
        rank = pairs[0][2]
        for i, (unsq, red, _) in enumerate(pairs):
            _set_keepdims(red, 1)  # (1,) * rank instead of a scalar made (1,) by the Unsqueeze
            node.input[i] = red.output[0]
            drop.add(id(unsq))
        if rank > 1:  # (K, 1, ..., 1) -> (K,)
            final, stacked = node.output[0], node.output[0] + "_stacked"
            node.output[0] = stacked
            shape = f"{final}_shape"
            graph.initializer.append(numpy_helper.from_array(np.array([len(pairs)], np.int64), shape))
            added.append((node, helper.make_node("Reshape", [stacked, shape], [final])))
    nodes = []
    for n in graph.node:
        if id(n) not in drop:
            nodes.append(n)
            nodes += [new for after, new in added if after is n]
    _replace(graph.node, nodes)
    return len(drop) - len(added)


def _hoist_scale(model: onnx.ModelProto) -> int:
    """The ``Mul(a, Mul(x, 2^j))`` -> ``Mul(x, a * 2^j)`` rewrite (in place); returns the nodes removed."""
    graph = model.graph
    scalars, consumers = _scalar_constants(graph), _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    shared: dict[tuple[str, str], str] = {}  # (a, c) -> the value a * c
    hoisted: dict[int, onnx.NodeProto] = {}  # id of the first Mul using a * c -> the node computing it
    drop: set[int] = set()
    for node in graph.node:
        if node.op_type != "Mul":
            continue
        for a_pos in (0, 1):
            inner = producer.get(node.input[1 - a_pos])
            if inner is None or inner.op_type != "Mul" or len(consumers[inner.output[0]]) != 1:
                continue
            if inner.output[0] in outputs or id(inner) in drop:
                continue
            c_pos = next((i for i in (0, 1) if inner.input[i] in scalars), None)
            if c_pos is None:
                continue
            c = scalars[inner.input[c_pos]]
            if c == 0 or not np.isfinite(c) or np.frexp(abs(c))[0] != 0.5:  # a power of two: exact scaling
                continue
            a, x, c_name = node.input[a_pos], inner.input[1 - c_pos], inner.input[c_pos]
            if a in scalars:  # two constants: nothing gained
                continue
            if (a, c_name) not in shared:
                name = f"{a}_times_{c_name}"
                shared[(a, c_name)] = name
                hoisted[id(node)] = helper.make_node("Mul", [a, c_name], [name])
            node.input[0], node.input[1] = x, shared[(a, c_name)]
            drop.add(id(inner))
            break
    nodes = []
    for n in graph.node:
        if id(n) in hoisted:
            nodes.append(hoisted[id(n)])  # a is computed before n (n used it): a * c can go right before n
        if id(n) not in drop:
            nodes.append(n)
    _replace(graph.node, nodes)
    return len(drop) - len(hoisted)


def _untransposed(name: str, producer: dict[str, onnx.NodeProto], consumers: dict[str, list[onnx.NodeProto]],
                  drop: set[int]) -> tuple[str, int]:
    """``(x, 1)`` where ``name`` is a 2-D ``Transpose(x)`` (dropped where this is its only use), else ``(name, 0)``."""
    node = producer.get(name)
    if node is None or node.op_type != "Transpose" or [int(v) for a in node.attribute if a.name == "perm"
                                                        for v in a.ints] != [1, 0]:
        return name, 0
    if len(consumers[name]) == 1:
        drop.add(id(node))
    return node.input[0], 1


def _fold_updates(model: onnx.ModelProto) -> int:
    """The ``Sub(p, Mul(r, g))`` -> one ``Gemm`` rewrite (in place); returns the nodes removed.

    ``r`` is a scalar constant (a step size exported as a constant) and ``g`` is one of
    * a 2-D ``MatMul`` (a weight gradient ``dZ^T A``; ``Transpose`` s of its inputs become ``transA`` /
      ``transB``): ``Gemm(a, b, p, alpha=-r, beta=1)``, shaped as ``p``;
    * ``ReduceSum(d, axes=[0], keepdims=0)`` of a 2-D float ``d`` ``(n, o)`` (a bias gradient):
      ``Gemm(ones(1, n), d, p, alpha=-r, beta=1)``, which is ``(1, o)``. Its users take that row where they can
      (a ``Gemm`` bias, the next such update, an axis-0 ``Concat`` of rows only followed by ``Reshape`` s);
      any other user gets a ``Reshape`` back to ``(o,)``.
    A Gemm sums the products in its own order, so the values may differ from the three nodes' in the last bit.
    """
    graph = model.graph
    scalars, ints, consumers = _scalar_constants(graph), _int_constants(graph), _consumers(graph)
    shapes, floats = _typed_shapes(model)
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    drop: set[int] = set()
    gemms: dict[int, list[onnx.NodeProto]] = {}  # id of a Sub -> the nodes that replace it
    rows: dict[str, str] = {}  # a bias update's value -> its (1, o) row
    ones: dict[str, str] = {}  # a row count's symbol -> the (1, n) ones row
    for node in graph.node:
        if node.op_type != "Sub":
            continue
        p, m = node.input
        mul = producer.get(m)
        if mul is None or mul.op_type != "Mul" or len(consumers[m]) != 1 or m in outputs:
            continue
        r_pos = next((i for i in (0, 1) if mul.input[i] in scalars), None)
        g = mul.input[1 - r_pos] if r_pos is not None else None
        grad = producer.get(g) if g is not None else None
        if grad is None or len(consumers[g]) != 1 or g in outputs:
            continue
        shape = shapes.get(p)
        if shape is None or shapes.get(g) != shape or shapes.get(node.output[0]) != shape:
            continue
        alpha = -scalars[mul.input[r_pos]]
        if grad.op_type == "MatMul" and len(shape) == 2 and all(len(shapes.get(i) or ()) == 2 for i in grad.input):
            a, trans_a = _untransposed(grad.input[0], producer, consumers, drop)
            b, trans_b = _untransposed(grad.input[1], producer, consumers, drop)
            gemms[id(node)] = [helper.make_node("Gemm", [a, b, rows.get(p, p)], [node.output[0]], alpha=alpha,
                                                beta=1.0, transA=trans_a, transB=trans_b)]
        elif grad.op_type == "ReduceSum" and _attr(grad, "keepdims", 1) == 0 and len(shape) == 1:
            d = grad.input[0]
            d_shape = shapes.get(d)
            if d_shape is None or len(d_shape) != 2 or d not in floats or _reduced_axes(grad, 2, ints) != (0,):
                continue
            new = []
            key = str(d_shape[0])
            if key not in ones:
                ones[key] = f"ones_row_{len(ones)}"
                count, size = f"{ones[key]}_count", f"{ones[key]}_shape"
                graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{ones[key]}_one"))
                new += [helper.make_node("Shape", [d], [count], start=0, end=1),
                        helper.make_node("Concat", [f"{ones[key]}_one", count], [size], axis=0),
                        helper.make_node("ConstantOfShape", [size], [ones[key]],
                                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))]
            rows[node.output[0]] = f"{node.output[0]}_row"
            new.append(helper.make_node("Gemm", [ones[key], d, rows.get(p, p)], [rows[node.output[0]]],
                                        alpha=alpha, beta=1.0))
            gemms[id(node)] = new
        else:
            continue
        drop.update((id(mul), id(grad)))
    # where a bias update's row cannot serve, a Reshape gives back the (o,) value
    concat_ok = {id(n) for n in graph.node if n.op_type == "Concat" and _attr(n, "axis", 0) == 0
                 and all(i in rows for i in n.input) and n.output[0] not in outputs
                 and all(c.op_type == "Reshape" and c.input[0] == n.output[0] for c in consumers[n.output[0]])}
    folded = {n.output[0] for i, ns in gemms.items() for n in ns}
    needs_flat: set[str] = set()
    for value, row in rows.items():
        for user in consumers[value]:
            for i, name in enumerate(user.input):
                if name != value:
                    continue
                if (user.op_type == "Gemm" and i == 2) or id(user) in concat_ok:
                    user.input[i] = row
                elif id(user) in gemms or user.output[0] in folded:
                    pass  # the replacing Gemm already reads the row
                else:
                    needs_flat.add(value)
        if value in outputs:
            needs_flat.add(value)
    nodes, added = [], 0
    for n in graph.node:
        if id(n) in gemms:
            nodes += gemms[id(n)]
            added += len(gemms[id(n)])
            flat = n.output[0]  # a bias update's Gemm writes rows[flat]; a weight update's writes flat itself
            if flat in needs_flat:
                shape_name = f"{flat}_flat_shape"
                graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), shape_name))
                nodes.append(helper.make_node("Reshape", [rows[flat], shape_name], [flat]))
                added += 1
        elif id(n) not in drop:
            nodes.append(n)
    removed = len(drop) + len(gemms) - added
    reshaped = {n.output[0] for n in graph.node if id(n) in concat_ok}  # (K * o,) is now (K, o)
    _replace(graph.value_info, [v for v in graph.value_info if v.name not in reshaped])
    _replace(graph.node, nodes)
    return removed


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with the rewrites of this module applied, and the number of nodes removed."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's model stays as it was
    graph = model.graph
    scalars, ints, shapes = _scalar_constants(graph), _int_constants(graph), _shapes(model)
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}  # value -> the value that replaces it
    drop: set[int] = set()
    for node in graph.node:
        if node.op_type == "Pow" and len(node.input) == 2 and node.output[0] not in outputs:
            exponent = scalars.get(node.input[1])
            if exponent == 1.0:
                rename[node.output[0]] = node.input[0]
                drop.add(id(node))
            elif exponent == 2.0:
                node.op_type = "Mul"
                node.input[1] = node.input[0]
        elif node.op_type in _REDUCE and _attr(node, "keepdims", 1) == 1:
            users = consumers[node.output[0]]
            shape_in = shapes.get(node.input[0])
            if len(users) != 1 or node.output[0] in outputs or shape_in is None:
                continue
            user = users[0]
            axes = _reduced_axes(node, len(shape_in), ints)
            if user.op_type not in ("Reshape", "Squeeze") or user.input[0] != node.output[0] or axes is None:
                continue
            kept = tuple(d for i, d in enumerate(shape_in) if i not in axes)
            if shapes.get(user.output[0]) != kept:
                continue
            _set_keepdims(node, 0)
            node.output[0] = user.output[0]  # the reduction was its only input: it now writes the user's value
            drop.add(id(user))
    kept_nodes = [n for n in graph.node if id(n) not in drop]
    for node in kept_nodes:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    for node in kept_nodes:  # tracer debug info: most of the file, read by nothing
        del node.metadata_props[:]
        node.doc_string = ""
    _replace(graph.node, kept_nodes)
    removed = len(drop) + _stack_scalars(model) + _hoist_scale(model) + _fold_updates(model)
    used = {name for n in graph.node for name in n.input}
    # e.g. the shapes of the Reshapes removed; the dropped nodes' values must not stay declared
    _replace(graph.initializer, [t for t in graph.initializer if t.name in used or t.name in outputs])
    _replace(graph.value_info, [v for v in graph.value_info if v.name in used or v.name in outputs])
    onnx.checker.check_model(model)
    return model, removed


def simplify_file(path: Path) -> int:
    """Rewrite the ONNX file at ``path`` in place (weights stay inside it); returns the nodes removed."""
    model, removed = simplify(onnx.load(str(path)))
    onnx.save(model, str(path))
    return removed


def drop_io(model: onnx.ModelProto, inputs: set[str], outputs: set[str]) -> onnx.ModelProto:
    """A copy of ``model`` without the graph outputs ``outputs`` and the nodes only they needed, and without the
    graph inputs ``inputs`` (which nothing left may read). Used to cut ``adapt_steps.onnx`` out of the traced
    ``adapt_predict.onnx`` (the same steps without the queries) instead of tracing the steps a second time."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    kept_outputs = [o for o in graph.output if o.name not in outputs]
    needed = {o.name for o in kept_outputs}
    kept_nodes = []
    for node in reversed(graph.node):  # topological order: a node's users come after it
        if any(o in needed for o in node.output):
            kept_nodes.append(node)
            needed.update(i for i in node.input if i)
    kept_nodes.reverse()
    if needed & inputs:
        raise ValueError(f"the kept outputs still read the inputs {sorted(needed & inputs)}")
    _replace(graph.output, kept_outputs)
    _replace(graph.node, kept_nodes)
    _replace(graph.input, [i for i in graph.input if i.name not in inputs])
    _replace(graph.initializer, [t for t in graph.initializer if t.name in needed])
    _replace(graph.value_info, [v for v in graph.value_info if v.name in needed])
    onnx.checker.check_model(model)
    return model

