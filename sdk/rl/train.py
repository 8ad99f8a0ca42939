"""Meta-training a policy: :func:`train` (the API) behind ``metaedge rl-train``.

A run directory, like the rest of the SDK's (no pickle anywhere): ``config.json`` (``{"kind": "rl", "rl":
RLConfig}``), ``model.safetensors`` (the flat policy parameters ``params/theta`` ``(P,)``), ``state.json`` (the
iteration reached) and ``metrics.jsonl`` (one line per iteration: surrogate before/after, KL, mean support and
query returns). Iteration ``i`` draws its tasks and noise from ``default_rng([seed, i])``, so a resumed run
continues exactly as an uninterrupted one would.

``mode = "maml"`` meta-trains (MAML-TRPO); ``mode = "pretrain"`` trains one policy on all tasks with the same TRPO
step and no adaptation (the "pretrained" baseline of the MAML paper); both store ``inner_lr`` for adapting later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import DivergedError, ExistsError, InputError
from ..checkpoint import load_state, read_json, save_state, write_json
from ..config import refuse_unknown_keys
from .advantages import advantages
from .envs import ENVS, VecEnv, make_env
from .maml import MetaBatch, TRPOSettings, adapt_all, trpo_step
from .policy import GaussianPolicy
from .rollout import rollout


@dataclass(frozen=True)
class RLConfig:
    """Everything that defines a meta-RL run (``config.json``'s ``rl`` part)."""

    family: str = "nav2d"
    mode: str = "maml"
    hidden: tuple[int, ...] = (32, 32)
    init_log_std: float = 0.0
    #: step size of the policy-gradient inner step (MAML paper: 0.1 for 2D navigation)
    inner_lr: float = 0.1
    meta_batch: int = 20
    #: episodes per task for the inner step (support) and again for the outer step (query)
    episodes: int = 10
    iterations: int = 100
    max_kl: float = 0.01
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 25

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLConfig:
        """Build from decoded JSON, refusing unknown keys and out-of-range values with one sentence."""
        refuse_unknown_keys(cls, data, "rl-train")
        data = dict(data)
        if "hidden" in data:
            if not isinstance(data["hidden"], (list, tuple)) or not all(
                    isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in data["hidden"]):
                raise InputError(f"hidden must be a list of positive layer widths, got {data['hidden']!r}")
            data["hidden"] = tuple(data["hidden"])
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.family not in ENVS:
            raise InputError(f"family must be one of {', '.join(sorted(ENVS))}, got {self.family!r}")
        if self.mode not in ("maml", "pretrain"):
            raise InputError(f"mode must be 'maml' or 'pretrain', got {self.mode!r}")
        for name in ("meta_batch", "episodes", "iterations", "threads", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("inner_lr", "max_kl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise InputError(f"{name} must be a positive finite number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def policy(self) -> GaussianPolicy:
        env = ENVS[self.family]
        return GaussianPolicy(env.obs_dim, env.action_dim, self.hidden, self.init_log_std)


@dataclass(frozen=True)
class RLRun:
    """A trained (or loaded) policy run."""

    config: RLConfig
    theta: torch.Tensor  # (P,)
    iteration: int

    @property
    def policy(self) -> GaussianPolicy:
        return self.config.policy()

    @property
    def env(self) -> VecEnv:
        return make_env(self.config.family)


def meta_batch(env: VecEnv, policy: GaussianPolicy, theta: torch.Tensor, tasks: np.ndarray, episodes: int,
               inner_lr: float, rng: np.random.Generator) -> tuple[MetaBatch, float, float]:
    """Support episodes with ``theta``, the adapted policies, query episodes with them; also the two mean returns."""
    n = len(tasks)
    support = rollout(env, policy, theta.expand(n, -1), tasks, episodes, rng)
    _, s_adv = advantages(support.obs, support.rewards, env.discount)
    s_obs, s_act = support.flat()
    batch = MetaBatch(s_obs, s_act, s_adv.reshape(n, -1), s_obs, s_act, s_adv.reshape(n, -1))
    with torch.no_grad():
        adapted = adapt_all(policy, theta, batch, inner_lr)
    query = rollout(env, policy, adapted, tasks, episodes, rng)
    _, q_adv = advantages(query.obs, query.rewards, env.discount)
    q_obs, q_act = query.flat()
    batch = MetaBatch(s_obs, s_act, s_adv.reshape(n, -1), q_obs, q_act, q_adv.reshape(n, -1))
    return batch, float(support.mean_return.mean()), float(query.mean_return.mean())


def pretrain_batch(env: VecEnv, policy: GaussianPolicy, theta: torch.Tensor, tasks: np.ndarray, episodes: int,
                   rng: np.random.Generator) -> tuple[MetaBatch, float, float]:
    """The batch of plain multi-task TRPO: the "adaptation" is a zero step (rate 0) and the query is the support."""
    n = len(tasks)
    eps = rollout(env, policy, theta.expand(n, -1), tasks, episodes, rng)
    _, adv = advantages(eps.obs, eps.rewards, env.discount)
    obs, act = eps.flat()
    ret = float(eps.mean_return.mean())
    return MetaBatch(obs, act, adv.reshape(n, -1), obs, act, adv.reshape(n, -1)), ret, ret


def _log(out: Path | None, record: dict[str, Any]) -> None:
    if out is not None:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def save_run(out: Path, run: RLRun) -> None:
    """Write the run's config, parameters and iteration (atomic files)."""
    write_json(out / "config.json", {"kind": "rl", "rl": run.config.to_dict()})
    save_state(out / "model.safetensors", {"params": {"theta": run.theta}})
    write_json(out / "state.json", {"iteration": run.iteration})


def load_run(path: Path) -> RLRun:
    """Read a run directory written by :func:`train`."""
    path = Path(path)
    record = read_json(path / "config.json")
    if not isinstance(record, dict) or record.get("kind") != "rl" or not isinstance(record.get("rl"), dict):
        raise InputError(f"{path} is not a policy run (its config.json lacks kind 'rl'); train one with "
                         "`metaedge rl-train`")
    config = RLConfig.from_dict(record["rl"])
    state = load_state(path / "model.safetensors")
    theta = state.get("params", {}).get("theta")
    if theta is None or theta.shape != (config.policy().size,):
        raise InputError(f"{path / 'model.safetensors'} does not hold params/theta of {config.policy().size} "
                         "floats for this config; retrain the run")
    iteration = read_json(path / "state.json").get("iteration", 0)
    return RLRun(config, theta.float(), int(iteration))


def train(config: RLConfig, out: Path | None = None, resume: bool = False,
          on_iteration: Callable[[dict[str, Any]], None] | None = None) -> RLRun:
    """Meta-train (or pretrain) a policy; writes the run directory ``out`` when given.

    Returns the run at ``config.iterations``; ``resume`` continues a run in ``out`` from its last checkpoint.
    """
    policy = config.policy()
    env = make_env(config.family)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        if out is not None:
            out = Path(out)
            if resume:
                run = load_run(out)
                if replace(run.config, iterations=config.iterations) != config:
                    raise InputError(f"{out} was trained with another config; resume it with its own config.json "
                                     "or start a new --out")
            elif out.exists() and any(out.iterdir()):
                raise ExistsError(f"{out} already exists and is not empty; choose a new --out or pass --resume")
            else:
                out.mkdir(parents=True, exist_ok=True)
                run = RLRun(config, policy.init(torch.Generator().manual_seed(config.seed)), 0)
                save_run(out, run)
        else:
            run = RLRun(config, policy.init(torch.Generator().manual_seed(config.seed)), 0)
        theta = run.theta
        settings = TRPOSettings(max_kl=config.max_kl)
        for it in range(run.iteration, config.iterations):
            start = time.perf_counter()
            rng = np.random.default_rng([config.seed, it])
            tasks = env.sample_tasks(rng, config.meta_batch)
            if config.mode == "maml":
                batch, ret0, ret1 = meta_batch(env, policy, theta, tasks, config.episodes, config.inner_lr, rng)
                lr = config.inner_lr
            else:
                batch, ret0, ret1 = pretrain_batch(env, policy, theta, tasks, config.episodes, rng)
                lr = 0.0
            theta, info = trpo_step(policy, theta, batch, lr, settings)
            if not bool(torch.isfinite(theta).all()):
                raise DivergedError(f"iteration {it} produced non-finite parameters; lower inner_lr or max_kl")
            record = {"iteration": it + 1, "return_before": ret0, "return_after": ret1,
                      "surrogate_before": info.loss_before, "surrogate_after": info.loss_after, "kl": info.kl,
                      "accepted": info.accepted, "seconds": time.perf_counter() - start}
            run = RLRun(config, theta, it + 1)
            _log(out, record)
            if on_iteration is not None:
                on_iteration(record)
            if out is not None and ((it + 1) % config.checkpoint_every == 0 or it + 1 == config.iterations):
                save_run(out, run)
        return run
    finally:
        torch.set_num_threads(threads)
