"""Meta-training: config, run directory, the outer loop, resume, and data-parallel ranks.

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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .distributed import World, close_world, init_world
from .learners import MetaLearner, MetaState, make_learner
from .models import build_model
from .normalize import Normalizer
from .progress import progress as progress_bar
from .tasks import TaskBatch, TaskFamily, make_family


@dataclass
class TrainConfig:
    """Everything that defines a meta-training run; ``config.json`` of a run directory holds it."""

    family: str = "sinusoid"
    family_options: dict[str, Any] = field(default_factory=dict)
    algo: str = "maml"
    shots: int = 10
    queries: int = 10
    inner_steps: int = 1
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    #: "constant" (the MAML papers) or "cosine" (decay to 1% of meta_lr: reaches the precision calibration needs)
    lr_schedule: str = "constant"
    meta_batch: int = 25
    iterations: int = 1000
    #: classification: classes per episode (default: the family's)
    ways: int | None = None
    #: "auto" (mlp for feature vectors, conv4 for images, conv1d for time series), "mlp", "conv4", "conv1d"
    model: str = "auto"
    #: conv nets: channels per block and normalisation ("batch", "group", "none")
    width: int = 64
    norm: str = "batch"
    hidden: list[int] = field(default_factory=lambda: [40, 40])
    activation: str = "relu"
    #: linear input->output path beside the hidden layers (helps near-linear calibration curves)
    skip: bool = False
    adapt: str | None = None
    seed: int = 0
    device: str = "cpu"
    #: intra-op CPU threads; 1 is fastest for small models and avoids oversubscription under torchrun
    threads: int = 1
    #: torch.compile the meta-gradient (several times faster for small models after a 15-40 s compile)
    compile: bool = False
    log_every: int = 100
    checkpoint_every: int = 1000

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, refusing unknown keys with their names."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` with one sentence for out-of-range values."""
        positive = ("shots", "queries", "inner_steps", "meta_batch", "iterations", "log_every", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        for name in ("inner_lr", "meta_lr"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_lr_at(config: TrainConfig, iteration: int) -> float:
    """Outer step size at ``iteration`` (a pure function of it, so resumed runs match uninterrupted ones)."""
    if config.lr_schedule == "cosine":
        floor = 0.01
        progress = iteration / max(config.iterations - 1, 1)
        return config.meta_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return config.meta_lr


def task_rng(seed: int, iteration: int) -> np.random.Generator:
    """The generator for the meta-batch of ``iteration``: independent of how the run was split."""
    return np.random.default_rng([seed, iteration])


def to_tensors(batch: TaskBatch, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
    """``(xs, ys, xq, yq)`` tensors of a task batch."""
    arrays = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
    return tuple(torch.as_tensor(a, device=device) for a in arrays)


@dataclass
class Run:
    """A loaded run directory: config, family, learner, normaliser and meta-state."""

    path: Path
    config: TrainConfig
    family: TaskFamily
    learner: MetaLearner
    normalizer: Normalizer
    state: MetaState

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Run:
        """Read a run directory written by :func:`train` (weights from ``model.safetensors``)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory {path} does not exist; train one with `metaedge train`")
        raw = ckpt.read_json(path / "config.json")
        config = TrainConfig.from_dict(raw["train"])
        family = make_family(config.family, **config.family_options)
        learner = build_learner(config, family)
        state = learner.canonical(ckpt.load_state(path / "model.safetensors"))
        state = {g: {k: v.to(device) for k, v in d.items()} for g, d in state.items()}
        return cls(path, config, family, learner, Normalizer(**raw["normalization"]), state)

    def with_adaptation(self, spec: str) -> Run:
        """This run with another adaptation spec (e.g. to ship ``head`` adaptation of a run trained with ``all``).

        Parameters adapted in training keep their (possibly meta-learned) rates; newly adapted ones start at the
        learner's initial rate, which is what ``inner_lr`` meant in training.
        """
        if self.config.algo == "protonet":
            raise ValueError("prototype learners adapt class prototypes, not parameters; drop the adaptation spec")
        config = replace(self.config, adapt=spec)
        learner = build_learner(config, self.family)
        initial = learner.init_state()["rates"]
        rates = {n: self.state["rates"].get(n, initial[n]) for n in learner.adapted}
        return replace(self, config=config, learner=learner, state={**self.state, "rates": rates})


def build_learner(config: TrainConfig, family: TaskFamily) -> MetaLearner:
    """Model and learner for ``config`` (the model's shape comes from the family)."""
    model = build_model(model_config(config, family))
    loss = "mse" if family.task_kind == "regression" else "cross_entropy"
    return make_learner(
        config.algo, model, loss=loss, inner_lr=config.inner_lr, inner_steps=config.inner_steps, adapt=config.adapt
    )


def model_kind(config: TrainConfig, family: TaskFamily) -> str:
    """The model kind ``auto`` resolves to for the family's input shape."""
    if config.model != "auto":
        return config.model
    return {1: "mlp", 2: "conv1d", 3: "conv4"}.get(len(family.input_shape), "mlp")


def model_config(config: TrainConfig, family: TaskFamily) -> dict[str, Any]:
    """JSON-able model description (stored in ``config.json``, rebuilt by ``build_model``)."""
    if config.algo == "protonet":
        out_dim = 0  # an embedding network: prototypes replace the head
    elif family.task_kind == "classification":
        out_dim = config.ways or family.output_dim
    else:
        out_dim = family.output_dim
    kind = model_kind(config, family)
    if kind == "mlp":
        return {"kind": "mlp", "in_dim": family.input_dim, "out_dim": out_dim, "hidden": list(config.hidden),
                "activation": config.activation, "skip": config.skip}
    shape = family.input_shape
    return {"kind": kind, "in_channels": shape[0], "out_dim": out_dim, "width": config.width,
            "input_size": shape[1], "norm": config.norm}


def sample_options(config: TrainConfig, family: TaskFamily) -> dict[str, Any]:
    """Extra ``sample_batch`` options: the number of ways for classification families."""
    return {"ways": config.ways} if family.task_kind == "classification" and config.ways else {}


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
                raise ValueError(f"cannot resume {out}: its {key} is {saved[key]!r}, not {config.to_dict()[key]!r}")
        state, normalizer = run.state, run.normalizer
        start = int(ckpt.read_json(out / "state.json")["iteration"])
    else:
        if (out / "config.json").exists():
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        state = learner.init_state()
        normalizer = Normalizer.fit(family, np.random.default_rng([config.seed, 2**31 - 1]))
    state = {g: {k: v.to(config.device) for k, v in d.items()} for g, d in state.items()}
    trainable = [t.requires_grad_(False) for key in learner.trainable_keys() for t in state[key].values()]
    optimizer = torch.optim.Adam(trainable, lr=config.meta_lr)
    if resume and (out / "optimizer.safetensors").exists():
        ckpt.load_optimizer(out / "optimizer.safetensors", optimizer)

    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(
            out / "config.json",
            {
                "train": config.to_dict(),
                "family": family.describe(),
                "model": model_config(config, family),
                "loss": learner.loss_name,
                "adapted": learner.adapted,
                "normalization": normalizer.to_dict(),
                "world_size": world.size,
            },
        )

    bar = progress_bar(range(start, config.iterations), initial=start, total=config.iterations,
                       enabled=progress and world.is_main, desc=f"{config.algo} {config.family}", unit="it")
    window: list[float] = []
    t0 = time.perf_counter()
    shard = world.shard(config.meta_batch)
    meta_gradient = _compiled(learner.meta_gradient) if config.compile else learner.meta_gradient
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
        if not np.isfinite(window[-1]):
            raise FloatingPointError(
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


def _checkpoint(out: Path, state: MetaState, optimizer: torch.optim.Optimizer, iteration: int) -> None:
    """Each file is replaced atomically; ``state.json`` goes last, so a crash between the writes at worst
    repeats a few iterations on resume, and never leaves a torn file."""
    ckpt.save_state(out / "model.safetensors", state)
    ckpt.save_optimizer(out / "optimizer.safetensors", optimizer)
    ckpt.write_json(out / "state.json", {"iteration": iteration})
