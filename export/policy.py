"""A trained policy run -> a policy bundle (``runtime/policy.py`` reads it): the forward and adaptation-step graphs.

Both graphs are traced from the SDK's own functions (``GaussianPolicy.mean`` and ``maml.inner_step``, the very
step meta-training differentiates through) with ``make_fx`` and written by the same dynamo exporter as the model
bundles' graphs (``export/graphs.py``); the number of samples is a dynamic axis. Before anything is written for
good, both graphs are run through ONNX Runtime on real episodes of the run's family and compared with PyTorch;
the bundle folder appears only when they agree to ``tolerance`` (it is built in a temporary folder and renamed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_rename_folder
from ..errors import ExistsError, InputError
from ..runtime.bundle import sha256
from ..runtime.manifest import Layout
from ..runtime.policy import (
    POLICY_FORMAT_VERSION,
    RECORD,
    PolicyBundle,
    PolicyGraphs,
    PolicyParity,
    PolicyRecord,
    advantages,
)
from ..sdk.rl.maml import inner_step
from ..sdk.rl.rollout import rollout
from ..sdk.rl.train import RLRun, load_run
from .graphs import _export

FORWARD, ADAPT_STEP = "forward.onnx", "adapt_step.onnx"


def write_policy_graphs(run: RLRun, out_dir: Path, example: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                        opset: int = 18) -> None:
    """Write ``forward.onnx`` and ``adapt_step.onnx`` into ``out_dir``; ``example`` = ``(obs (N, O), actions
    (N, A), advantages (N,))`` for tracing."""
    policy, lr = run.policy, run.config.inner_lr

    def forward(theta: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return policy.mean(theta, obs), policy.unflatten(theta)["log_std"] + 0.0

    def step(theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        return inner_step(policy, theta, obs, actions, adv, lr)

    theta = run.theta.detach()
    obs, actions, adv = example
    _export(forward, (theta, obs), (["theta", "obs"], ["mean", "log_std"]), (1,), out_dir / FORWARD, opset)
    _export(step, (theta, obs, actions, adv), (["theta", "obs", "actions", "advantages"], ["new_theta"]),
            (1, 2, 3), out_dir / ADAPT_STEP, opset)


def _parity(run: RLRun, folder: Path, episodes: tuple[torch.Tensor, torch.Tensor, np.ndarray]) -> PolicyParity:
    """Run the written graphs through ONNX Runtime against PyTorch on the same data."""
    from ..runtime.backends.onnxruntime import session

    obs, actions, adv = episodes
    theta = run.theta.detach()
    fwd, step = session(folder / FORWARD), session(folder / ADAPT_STEP)
    mean, _ = fwd.run(None, {"theta": theta.numpy(), "obs": obs.numpy()})
    new = step.run(None, {"theta": theta.numpy(), "obs": obs.numpy(), "actions": actions.numpy(),
                          "advantages": adv})[0]
    want_mean = run.policy.mean(theta, obs).detach().numpy()
    want_new = inner_step(run.policy, theta, obs, actions, torch.as_tensor(adv), run.config.inner_lr).detach().numpy()
    return PolicyParity(float(np.abs(mean - want_mean).max()), float(np.abs(new - want_new).max()), len(obs))


def export_policy(run_path: Path, out: Path, opset: int = 18, tolerance: float = 1e-5,
                  seed: int = 0) -> Path:
    """Export the policy run in ``run_path`` as a policy bundle folder ``out``; returns ``out``.

    Raises :class:`InputError` when the graphs disagree with PyTorch by more than ``tolerance`` (nothing is
    written then) and :class:`ExistsError` when ``out`` exists.
    """
    out = Path(out)
    if out.exists():
        raise ExistsError(f"{out} already exists; choose a new --out (metaedge never overwrites a bundle)")
    run = load_run(run_path)
    env = run.env
    rng = np.random.default_rng(seed)
    tasks = env.sample_tasks(rng, 1)
    eps = rollout(env, run.policy, run.theta[None], tasks, 2, rng)
    _, adv = advantages(eps.obs[0].numpy(), eps.rewards[0].numpy(), env.discount)
    obs, actions = eps.obs[0].reshape(-1, env.obs_dim), eps.actions[0].reshape(-1, env.action_dim)
    adv = adv.reshape(-1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".policy-", dir=out.parent))
    try:
        write_policy_graphs(run, tmp, (obs, actions, torch.as_tensor(adv)), opset)
        np.save(tmp / "theta0.npy", run.theta.detach().numpy().astype(np.float32), allow_pickle=False)
        parity = _parity(run, tmp, (obs, actions, adv))
        worst = max(parity.forward, parity.adapt_step)
        if not worst <= tolerance:
            raise InputError(f"the exported policy graphs differ from PyTorch by {worst:.3g} (more than {tolerance:g})"
                             "; this is an exporter bug for this policy, report it with the run")
        policy = run.policy
        record = PolicyRecord(
            format_version=POLICY_FORMAT_VERSION, kind="policy", family=run.config.family, obs_dim=env.obs_dim,
            action_dim=env.action_dim, hidden=tuple(run.config.hidden), action_low=tuple(env.action_low),
            action_high=tuple(env.action_high), horizon=env.horizon, discount=env.discount,
            inner_lr=run.config.inner_lr, layout=Layout.build(policy.shapes),
            graphs=PolicyGraphs(FORWARD, ADAPT_STEP),
            files={name: sha256(tmp / name) for name in (FORWARD, ADAPT_STEP, "theta0.npy")}, parity=parity,
            provenance={"run": str(Path(run_path).resolve()), "metaedge_version": __version__,
                        "iterations": str(run.iteration), "mode": run.config.mode})
        (tmp / RECORD).write_text(record.to_json())
        PolicyBundle.open(tmp)  # what a device will read: refuse to ship a bundle our own reader rejects
        atomic_rename_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def describe(bundle: Path) -> str:
    """One JSON line summarising a written policy bundle (for the CLI)."""
    rec = PolicyBundle.open(bundle).record
    return json.dumps({"bundle": str(bundle), "family": rec.family, "parameters": rec.size,
                       "inner_lr": rec.inner_lr, "parity": rec.parity._write() if rec.parity else None})
