"""Trace the learner's own functions into ONNX graphs with plain operators.

``forward.onnx``: ``(x, *adapted) -> y``; ``adapt_step.onnx``: ``(xs, ys, *adapted, *rates) -> (*adapted', loss)``;
with an unrolled step count also ``adapt_steps.onnx`` (every step's parameters and losses, for the guard) and
``adapt_predict.onnx`` (``(xs, ys, xq, *adapted, *rates) -> (y, *steps, losses)``: the same steps and the forward
pass on the queries in one call, what a device runs per adaptation);
for Gauss-Newton learners (``ridge``) ``gauss_newton.onnx``: ``(xs, ys, *adapted) -> (jacobian, residual)``, the
linearised least-squares problem whose small damped solve the runtime does in float64 (ONNX has no solver).
All come from the very functions the trainer differentiates (``InnerLoop.forward`` / ``InnerLoop.step``):
``make_fx`` turns the ``torch.func`` gradient into plain aten operations, then ``torch.onnx.export`` (dynamo)
writes them as standard ONNX operators. Frozen parameters are constants inside the graphs, and so are step sizes
that are one value throughout their tensor (``*rates`` above lists only the others, e.g. Meta-SGD's); the number
of samples (support size, prediction batch) is a dynamic axis.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from ..errors import InputError
from ..sdk.learners import Learner, MetaState
from .simplify import drop_io, simplify_file


def _convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    """``aten.convolution_backward`` as forward convolutions, which every ONNX engine has.

    PyTorch has no ONNX form for the backward op; for the layers the exporter allows (stride 1, dilation 1,
    one group, not transposed) the input gradient is a transposed convolution with the same weight and the
    weight gradient is a convolution of the input with the output gradient (batch as channels).
    """
    if transposed or groups != 1 or any(s != 1 for s in stride) or any(d != 1 for d in dilation):
        raise InputError("export supports convolutions with stride 1, dilation 1 and one group; "
                         f"got stride {stride}, dilation {dilation}, groups {groups}")
    dims = weight.dim() - 2
    conv, conv_t = (F.conv1d, F.conv_transpose1d) if dims == 1 else (F.conv2d, F.conv_transpose2d)
    grad_input = conv_t(grad_output, weight, padding=padding) if output_mask[0] else None
    grad_weight = (conv(input.transpose(0, 1), grad_output.transpose(0, 1), padding=padding).transpose(0, 1)
                   if output_mask[1] else None)
    grad_bias = grad_output.sum([0, *range(2, grad_output.dim())]) if output_mask[2] else None
    return grad_input, grad_weight, grad_bias


def _decompositions() -> dict:
    """Core aten decompositions (batch-norm and pooling backward into plain ops) plus our convolution backward."""
    table = dict(core_aten_decompositions())
    table[torch.ops.aten.convolution_backward.default] = _convolution_backward
    return table


def _distinct_rows(args: tuple[torch.Tensor, ...], groups: tuple[tuple[int, ...], ...]) -> tuple[torch.Tensor, ...]:
    """The inputs of each group of indices (inputs sharing one sample axis) with their rows re-indexed
    (cyclically) to a count no other dimension of the inputs, and no other group, has.

    Symbolic tracing gives equal sizes one symbol (duck shaping), so a support of 16 samples traced beside a
    16-wide layer's parameters would freeze the sample axis at 16 (and a query batch as large as the support
    would share its axis). The values do not matter for tracing.
    """
    grouped = {i for g in groups for i in g}
    taken = {int(d) for i, a in enumerate(args) for j, d in enumerate(a.shape) if not (i in grouped and j == 0)}
    out = list(args)
    for group in groups:
        k = int(args[group[0]].shape[0])
        n = max(k, 2)
        while n in taken:
            n += 1
        taken.add(n)
        if n != k:
            rows = torch.arange(n) % k
            for i in group:
                out[i] = args[i][rows]
    return args if all(o is a for o, a in zip(out, args)) else tuple(out)


def _export(fn, args: tuple[torch.Tensor, ...], names: tuple[list[str], list[str]], dynamic: int | tuple[int, ...],
            path: Path, opset: int, queries: tuple[int, ...] = ()) -> None:
    """``make_fx`` + dynamo export of ``fn(*args)``; the first ``dynamic`` inputs (or those at the indices
    ``dynamic``) get a dynamic axis 0 (the support), those at the indices ``queries`` another one (the queries)."""
    dynamic = tuple(range(dynamic)) if isinstance(dynamic, int) else dynamic
    args = _distinct_rows(args, tuple(g for g in (dynamic, queries) if g))
    # frozen parameters are real tensors closed over by `fn`: they become constants of the graph
    graph = make_fx(fn, decomposition_table=_decompositions(), tracing_mode="symbolic",
                    _allow_non_fake_inputs=True)(*args)
    n, m = torch.export.Dim("n", min=1), torch.export.Dim("m", min=1)
    shapes = tuple({0: n} if i in dynamic else {0: m} if i in queries else None for i in range(len(args)))
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" on every export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
        try:
            # weights inside the graph file, which the manifest hashes (an external .data file would not be)
            torch.onnx.export(graph, args, str(path), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                              input_names=names[0], output_names=names[1], verbose=False, optimize=True,
                              external_data=False)
        finally:
            quiet.setLevel(level)
    simplify_file(path)  # exact rewrites: fewer nodes for the runtime to dispatch


def _split_rates(rates: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(fixed, varying)``: the rates that hold one value throughout, as 0-d tensors, and the names of the others."""
    fixed = {k: r.reshape(-1)[0].clone() for k, r in rates.items()
             if r.numel() and bool((r == r.reshape(-1)[0]).all())}
    return fixed, [k for k in rates if k not in fixed]


def export_graphs(learner: Learner, state: MetaState, out_dir: Path, example_x: torch.Tensor,
                  example_y: torch.Tensor, opset: int = 18, unrolled_steps: int = 0) -> dict[str, Path]:
    """Write ``forward.onnx`` and ``adapt_step.onnx`` (or ``gauss_newton.onnx``) for a learner into ``out_dir``.

    Args:
        learner: the run's learner (its inner loop is traced).
        state: meta-state whose frozen parameters become constants.
        example_x, example_y: one support set ``(k, *input_shape)`` / ``(k, out)`` (standardised), for tracing.
        unrolled_steps: if positive, also ``adapt_steps.onnx``: that many steps unrolled into one graph, with
            outputs ``steps.<name>`` ``(K, *shape)`` (the parameters after each step) and ``losses`` ``(K + 1,)``
            (the support loss before each step and after the last), so a device adapts in one call and can still
            roll back to the last step that lowered the support loss; and ``adapt_predict.onnx``: the same steps
            then the forward pass on queries ``xq`` ``(m, *input_shape)``, outputs ``y`` ``(m, out)`` (at the
            parameters after the last step) then those of ``adapt_steps.onnx``, so adapting and predicting is one
            call where the guard keeps every step (where it does not, the kept state is in the history).
    """
    fast, frozen = learner.split(state["params"])
    frozen = {k: v.detach() for k, v in frozen.items()}
    names = list(fast)
    inner = learner.inner

    def forward(x: torch.Tensor, *flat: torch.Tensor) -> torch.Tensor:
        return inner.forward(dict(zip(names, flat)), frozen, x)

    # a rate that is one number throughout its tensor (MAML, ANIL, Reptile) is a scalar constant of the step
    # graphs, so a step's update folds into one Gemm (export/simplify.py); per-element rates (Meta-SGD) are inputs
    fixed, varying = _split_rates({k: state["rates"][k].detach() for k in names})

    def rates_of(flat: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return {**fixed, **dict(zip(varying, flat))}

    def step(xs: torch.Tensor, ys: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        new, loss = inner.step(dict(zip(names, flat[: len(names)])), frozen, rates_of(flat[len(names):]), xs, ys)
        return (*[new[k] for k in names], loss)

    theta = tuple(fast[k].detach() for k in names)
    rates = tuple(state["rates"][k].detach() for k in varying)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"forward": out_dir / "forward.onnx"}
    param_names = [f"theta.{k}" for k in names]
    _export(forward, (example_x, *theta), (["x", *param_names], ["y"]), 1, paths["forward"], opset)
    if learner.device_solver.kind == "gauss-newton":  # the device solves; the graph gives J and r

        def system(xs: torch.Tensor, ys: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return inner.system(dict(zip(names, flat)), frozen, xs, ys)

        paths["gauss_newton"] = out_dir / "gauss_newton.onnx"
        _export(system, (example_x, example_y, *theta), (["xs", "ys", *param_names], ["jacobian", "residual"]), 2,
                paths["gauss_newton"], opset)
        return paths
    paths["adapt_step"] = out_dir / "adapt_step.onnx"
    step_inputs = ["xs", "ys", *param_names, *[f"rate.{k}" for k in varying]]
    _export(step, (example_x, example_y, *theta, *rates), (step_inputs, [*[f"new.{k}" for k in names], "loss"]),
            2, paths["adapt_step"], opset)
    if unrolled_steps > 0:

        def unroll(xs: torch.Tensor, ys: torch.Tensor, flat: tuple[torch.Tensor, ...]
                   ) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
            """The parameters after each of the steps, and the support losses ``(K + 1,)``."""
            params, rates_ = dict(zip(names, flat[: len(names)])), rates_of(flat[len(names):])
            history, losses = [], []
            for _ in range(unrolled_steps):
                params, loss = inner.step(params, frozen, rates_, xs, ys)
                history.append(params)
                losses.append(loss)
            losses.append(inner.support_loss(params, frozen, xs, ys))
            return history, torch.stack(losses)

        def adapt_predict(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, *flat: torch.Tensor
                          ) -> tuple[torch.Tensor, ...]:
            history, losses = unroll(xs, ys, flat)
            return (inner.forward(history[-1], frozen, xq), *[torch.stack([h[k] for h in history]) for k in names],
                    losses)

        paths["adapt_predict"] = out_dir / "adapt_predict.onnx"
        fused_inputs = ["xs", "ys", "xq", *step_inputs[2:]]
        _export(adapt_predict, (example_x, example_y, example_x, *theta, *rates),
                (fused_inputs, ["y", *[f"steps.{k}" for k in names], "losses"]), 2, paths["adapt_predict"], opset,
                queries=(2,))
        # the same steps without the queries: cut out of the fused graph rather than traced a second time
        paths["adapt_steps"] = out_dir / "adapt_steps.onnx"
        onnx.save(drop_io(onnx.load(str(paths["adapt_predict"])), {"xq"}, {"y"}), str(paths["adapt_steps"]))
    return paths


def export_embedding(learner: Learner, state: MetaState, out_dir: Path, example_x: torch.Tensor,
                     opset: int = 18) -> dict[str, Path]:
    """Write ``forward.onnx`` ``x -> embedding`` for a prototype learner (every parameter and buffer a constant).

    Batch norm runs in eval mode with the meta-trained running statistics, so a device embeds samples one
    at a time; the prototypes themselves are computed by the runtime from the support embeddings.
    """
    from torch.func import functional_call

    weights = {**{k: v.detach() for k, v in state["params"].items()},
               **{k: v.detach() for k, v in state.get("buffers", {}).items()}}
    model = learner.model.eval()

    def embed(x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, weights, (x,))

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "forward.onnx"
    _export(embed, (example_x,), (["x"], ["y"]), 1, path, opset)
    return {"forward": path}
