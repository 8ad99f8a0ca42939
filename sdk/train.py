"""Meta-training: the outer loop, checkpoints, resume, and data-parallel ranks (run loading: :mod:`.run`).

One iteration draws a meta-batch of tasks from a generator seeded by ``(seed, iteration)``, so a
run is deterministic on the CPU for a seed, resumes exactly, and every rank of a distributed run
sees the same meta-batch and keeps its own contiguous shard of it.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DivergedError, ExistsError, InputError
from . import checkpoint as ckpt
from .allocator import tune_allocator
from .config import TrainConfig
from .distributed import World, close_world, init_world
from .learners import Learner, MetaState
from .learners.mlp_fast import fast_meta_gradient
from .normalize import Normalizer
from .optim import FusedAdam, fused_adam_serves
from .progress import progress as progress_bar
from .run import Run, RunRecord, build_learner, model_config, sample_options, task_rng, to_tensors
from .tasks import make_family

__all__ = ["meta_gradient_for", "meta_lr_at", "meta_optimizer", "train"]


def meta_lr_at(config: TrainConfig, iteration: int) -> float:
    """Outer step size at ``iteration`` (a pure function of it, so resumed runs match uninterrupted ones)."""
    if config.lr_schedule == "cosine":
        floor = 0.01
        progress = iteration / max(config.iterations - 1, 1)
        return config.meta_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return config.meta_lr


def train(
    config: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Meta-train into run directory ``out``; returns its path.

    With ``resume=True`` an existing run continues from its last checkpoint up to
    ``config.iterations``; otherwise ``out`` must not already hold a run.
    """
    config.validate()
    out = Path(out)
    world = init_world(config.device)
    try:
        return _train(config, out, resume, progress, on_log, world)
    finally:
        close_world(world)


def _train(config, out, resume, progress, on_log, world: World) -> Path:
    tune_allocator()  # conv activations reused in the heap, not page-faulted in every step (see .allocator)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    family = make_family(config.family, **config.family_options)
    learner = build_learner(config, family)
    start = 0
    if resume:
        run = Run.load(out, config.device)
        saved = run.config.to_dict()
        keys = ("family", "family_options", "algo", "model", "ways", "width", "norm", "hidden", "activation", "skip",
                "adapt", "seed", "shots")
        for key in keys:
            if saved[key] != config.to_dict()[key]:
                raise InputError(f"cannot resume {out}: its {key} is {saved[key]!r}, not {config.to_dict()[key]!r}")
        state, normalizer = run.state, run.normalizer
        start = int(ckpt.read_json(out / "state.json")["iteration"])
    elif (out / "config.json").exists():
        raise ExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    elif config.init_from:
        state, normalizer = start_from(config, family, learner)
    else:
        state = learner.init_state()
        normalizer = Normalizer.fit(family, np.random.default_rng([config.seed, 2**31 - 1]))
    state = {g: {k: v.to(config.device) for k, v in d.items()} for g, d in state.items()}
    trainable = [t.requires_grad_(False) for key in learner.trainable_keys() for t in state[key].values()]
    optimizer = meta_optimizer(trainable, config.meta_lr)
    if resume and (out / "optimizer.safetensors").exists():
        ckpt.load_optimizer(out / "optimizer.safetensors", optimizer)

    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        record = RunRecord(train=config, family=family.describe(), model=model_config(config, family),
                           loss=learner.loss_name, adapted=tuple(learner.adapted), normalization=normalizer.to_dict(),
                           world_size=world.size)
        ckpt.write_json(out / "config.json", record.to_dict())

    bar = progress_bar(range(start, config.iterations), initial=start, total=config.iterations,
                       enabled=progress and world.is_main, desc=f"{config.algo} {config.family}", unit="it")
    window: list[float] = []
    t0 = time.perf_counter()
    shard = world.shard(config.meta_batch)
    meta_gradient = meta_gradient_for(config, learner)
    for it in bar:
        batch = family.sample_batch(task_rng(config.seed, it), config.meta_batch, config.shots, config.queries,
                                    **sample_options(config, family))
        xs, ys, xq, yq = (t[shard] for t in to_tensors(normalizer.batch(batch), config.device))
        grads, losses = meta_gradient(state, xs, ys, xq, yq, denominator=config.meta_batch)
        flat_grads = [grads[key][n] for key in learner.trainable_keys() for n in state[key]]
        loss_sum = losses.sum().reshape(1)
        world.all_reduce_sum([*flat_grads, loss_sum])
        for p, g in zip(trainable, flat_grads):
            p.grad = g
        for group in optimizer.param_groups:
            group["lr"] = meta_lr_at(config, it)
        optimizer.step()
        window.append(loss_sum.item() / config.meta_batch)
        if not math.isfinite(window[-1]):
            raise DivergedError(
                f"meta-loss became {window[-1]} at iteration {it}; lower --meta-lr or --inner-lr and retrain"
            )
        done = it + 1
        if done % config.log_every == 0 or done == config.iterations:
            record = {"iteration": done, "meta_loss": float(np.mean(window)), "seconds": time.perf_counter() - t0}
            window.clear()
            bar.set_postfix(loss=f"{record['meta_loss']:.4f}")
            if world.is_main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            if on_log:
                on_log(record)
        if world.is_main and (done % config.checkpoint_every == 0 or done == config.iterations):
            _checkpoint(out, state, optimizer, done)
    bar.close()
    return out


def start_from(config: TrainConfig, family, learner: Learner) -> tuple[MetaState, Normalizer]:
    """The meta-state (weights and learned rates) and normaliser of the run ``config.init_from``, for a run of the
    same architecture.

    The normaliser is kept, not refitted: the meta-parameters live in the starting run's standardised
    coordinates, and a bundle exported from this run must map physical units as its predecessor did.
    """
    start = Run.load(config.init_from, config.device)
    record = RunRecord.parse(ckpt.read_json(start.path / "config.json"), start.path / "config.json")
    ours = {"algo": config.algo, "model": model_config(config, family), "loss": learner.loss_name,
            "adapted parameters": list(learner.adapted)}
    theirs = {"algo": start.config.algo, "model": record.model, "loss": start.learner.loss_name,
              "adapted parameters": list(start.learner.adapted)}
    for what in ours:
        if ours[what] != theirs[what]:
            raise InputError(f"cannot start from {config.init_from}: its {what} ({theirs[what]!r}) are not this "
                             f"run's ({ours[what]!r}); train with the same architecture or drop init_from")
    fresh = learner.init_state()
    for group, tensors in fresh.items():
        for name, t in tensors.items():
            theirs_t = start.state.get(group, {}).get(name)
            if theirs_t is None or tuple(theirs_t.shape) != tuple(t.shape):
                raise InputError(f"cannot start from {config.init_from}: its {group} {name} is missing or of another "
                                 "shape; train with the same architecture or drop init_from")
    state = {g: {n: start.state[g][n].detach().clone() for n in d} for g, d in fresh.items()}
    return state, start.normalizer


def meta_gradient_for(config: TrainConfig, learner: Learner) -> Callable[..., tuple[MetaState, torch.Tensor]]:
    """The meta-gradient function the trainer calls, same signature as ``learner.meta_gradient``.

    ``config.compile`` None (the default): the hand-derived batched passes of
    :mod:`~metaedge.sdk.learners.mlp_fast` where they serve the learner and model (MAML, first-order MAML, Meta-SGD,
    ANIL, Reptile over a plain MLP), else eager autograd. False: eager autograd. True: torch.compile of the autograd
    path.
    """
    if config.compile:
        return _compiled(learner.meta_gradient)
    if config.compile is None:
        fast = fast_meta_gradient(learner)
        if fast is not None:
            return fast
    return learner.meta_gradient


def meta_optimizer(params: list[torch.Tensor], lr: float) -> FusedAdam | torch.optim.Adam:
    """The outer Adam: :class:`~metaedge.sdk.optim.FusedAdam` on the CPU and CUDA (torch's fused kernel, one call
    for all tensors: 16 instead of 204 us per step for the sinusoid MLP, ``benchmarks/train_loop_parts.py``, and no
    1-2 s import of ``torch._dynamo``), else ``torch.optim.Adam``."""
    if fused_adam_serves(params):
        return FusedAdam(params, lr)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _compiled(fn: Callable) -> Callable:
    """``torch.compile(fn)``, falling back to eager (with one warning) where the compiler cannot handle it."""
    compiled = torch.compile(fn, dynamic=False)
    state = {"eager": False}

    def call(*args, **kwargs):
        if not state["eager"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # the compiler's failure modes are many; eager is always correct
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); training eagerly",
                              stacklevel=2)
                state["eager"] = True
        return fn(*args, **kwargs)

    return call


def _checkpoint(out: Path, state: MetaState, optimizer: FusedAdam | torch.optim.Optimizer, iteration: int) -> None:
    """Each file is replaced atomically; ``state.json`` goes last, so a crash between the writes at worst
    repeats a few iterations on resume, and never leaves a torn file."""
    ckpt.save_state(out / "model.safetensors", state)
    ckpt.save_optimizer(out / "optimizer.safetensors", optimizer)
    ckpt.write_json(out / "state.json", {"iteration": iteration})
