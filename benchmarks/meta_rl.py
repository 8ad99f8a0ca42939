"""Gradient-based meta-RL: returns after 0-3 policy-gradient steps on 40 new tasks, and meta-training speed.

For one family (``nav2d``: the MAML paper's 2D navigation; ``pendulum``: swing-up of units of the shared
pendulum simulator), three starting policies adapt on 40 unseen tasks with the same inner step (REINFORCE with
the linear baseline, the run's step size, 20 fresh episodes per step):

* ``maml``: meta-trained with MAML-TRPO (``metaedge.sdk.rl``);
* ``pretrained``: one policy trained on all tasks with the same TRPO step and no adaptation (the paper's baseline);
* ``random``: the untrained initial policy.

Each cell is the mean episode return over the 40 tasks with a normal-approximation 95% CI. Speed: meta-training
iterations per second of the vmapped implementation against the per-task-loop reference (``sdk/rl/loop.py``,
written like learn2learn's ``maml_trpo``) on the same meta-batches, and, with ``--l2l-python``, learn2learn's own
example in its venv (reported as failed, with the reason, when it does not finish). One torch thread each; the
machine's 2 cores are shared.

    python benchmarks/meta_rl.py --family nav2d --iterations 60
    python benchmarks/meta_rl.py --family pendulum --iterations 40 --no-speed
    python benchmarks/meta_rl.py --family half-cheetah-vel --no-speed    # optional: the mujoco extra
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import write_result

from metaedge.sdk.evaluate.stats import mean_ci
from metaedge.sdk.rl import RLConfig, train
from metaedge.sdk.rl.envs import ENVS, make_env
from metaedge.sdk.rl.evaluate import adaptation_returns
from metaedge.sdk.rl.loop import loop_iteration
from metaedge.sdk.rl.maml import trpo_step
from metaedge.sdk.rl.train import meta_batch

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def returns_table(config: RLConfig, thetas: dict[str, torch.Tensor], tasks: int, steps: int, episodes: int,
                  seed: int) -> dict[str, dict[str, list[float]]]:
    policy, env = config.policy(), make_env(config.family)
    new_tasks = env.sample_tasks(np.random.default_rng([seed, 10**6]), tasks)  # never a training draw
    out = {}
    for name, theta in thetas.items():
        r = adaptation_returns(env, policy, theta, new_tasks, config.inner_lr, steps, episodes,
                               np.random.default_rng([seed, 1]))
        stats = [mean_ci(r[:, k]) for k in range(steps + 1)]
        out[name] = {"mean": [s[0] for s in stats], "ci95": [s[1] for s in stats]}
    return out


def speed(config: RLConfig, iterations: int) -> dict[str, float]:
    """Seconds per meta-iteration (rollouts + adaptation + TRPO) of the vmapped and the per-task-loop code."""
    env, policy = make_env(config.family), config.policy()
    theta = policy.init(torch.Generator().manual_seed(config.seed))
    out = {}
    for name in ("vmap", "loop"):
        th = theta.clone()
        start = 0.0
        for it in range(iterations + 1):  # iteration 0 warms up (torch.func's first vmap builds its machinery)
            if it == 1:
                start = time.perf_counter()
            rng = np.random.default_rng([config.seed, it])
            tasks = env.sample_tasks(rng, config.meta_batch)
            if name == "vmap":
                batch, _, _ = meta_batch(env, policy, th, tasks, config.episodes, config.inner_lr, rng)
                th, _ = trpo_step(policy, th, batch, config.inner_lr)
            else:
                th, _ = loop_iteration(env, policy, th, tasks, config.episodes, config.inner_lr, rng)
        out[name] = iterations / (time.perf_counter() - start)
    return out


def learn2learn(python: str, examples: str, iterations: int, timeout: float) -> dict[str, object]:
    worker = Path(__file__).resolve().parent / "_l2l_maml_trpo_worker.py"
    # its own session, so that a timeout also ends the example's environment worker processes
    proc = subprocess.Popen([python, str(worker), examples, str(iterations), "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"ran": False, "reason": f"learn2learn's maml_trpo did not finish {iterations} meta-iterations in "
                                        f"{timeout:.0f} s"}
    for line in stdout.splitlines():
        if line.startswith("@@L2L@@ "):
            rec = json.loads(line[8:])
            return {"ran": True, "iterations_per_second": rec["iterations"] / rec["seconds"]}
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"ran": False, "reason": f"learn2learn's maml_trpo exited with {proc.returncode}: {tail}"}


def device(config: RLConfig, theta: torch.Tensor, episodes: int, repeats: int = 20) -> dict[str, float]:
    """The device's side on the meta-trained policy: export a policy bundle, then for one unit's ``episodes``
    episodes time the advantages (numpy, C) and the adaptation step (ONNX Runtime, one thread), and measure the
    step's parity with PyTorch's inner step and the C advantages' with numpy's."""
    import tempfile

    from metaedge.export.policy import export_policy
    from metaedge.runtime import native
    from metaedge.runtime.policy import PolicyBundle, PolicyRuntime
    from metaedge.runtime.policy import advantages as np_advantages
    from metaedge.sdk.rl.maml import inner_step
    from metaedge.sdk.rl.rollout import rollout
    from metaedge.sdk.rl.train import RLRun, save_run

    env, policy = make_env(config.family), config.policy()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        save_run(run_dir, RLRun(config, theta, config.iterations))
        rt = PolicyRuntime(PolicyBundle.open(export_policy(run_dir, Path(tmp) / "bundle")))
        rng = np.random.default_rng([config.seed, 2 * 10**6])
        eps = rollout(env, policy, theta[None], env.sample_tasks(rng, 1), episodes, rng)
        obs, act, rew = (t[0].numpy() for t in (eps.obs, eps.actions, eps.rewards))

        def timed(fn) -> float:
            fn()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            return (time.perf_counter() - start) / repeats * 1e3

        _, adv = np_advantages(obs, rew, env.discount)
        flat_obs, flat_act = obs.reshape(-1, env.obs_dim), act.reshape(-1, env.action_dim)
        want = inner_step(policy, theta, torch.as_tensor(flat_obs), torch.as_tensor(flat_act),
                          torch.as_tensor(adv.reshape(-1)), config.inner_lr).detach().numpy()
        out = {"samples": int(obs.shape[0] * obs.shape[1]), "parameters": int(theta.numel()),
               "step_max_abs_diff_vs_torch": float(np.abs(rt.step(theta.numpy(), flat_obs, flat_act,
                                                                  adv.reshape(-1)) - want).max()),
               "numpy_advantages_ms": timed(lambda: np_advantages(obs, rew, env.discount)),
               "onnx_step_ms": timed(lambda: rt.step(None, flat_obs, flat_act, adv.reshape(-1))),
               "adapt_ms": timed(lambda: rt.adapt(None, obs, act, rew))}
        if native.available():
            out["c_advantages_max_abs_diff_vs_numpy"] = float(np.abs(native.advantages(obs, rew, env.discount)[1]
                                                                     - adv).max())
            out["c_advantages_ms"] = timed(lambda: native.advantages(obs, rew, env.discount))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=sorted(ENVS), default="nav2d",
                    help="half-cheetah-vel needs the mujoco extra (pip install -e '.[mujoco]')")
    ap.add_argument("--iterations", type=int, default=None, help="meta-iterations (default: the config's)")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--episodes", type=int, default=20, help="episodes per adaptation step at evaluation")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--speed-iterations", type=int, default=3)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--l2l-python", help="python of the learn2learn venv (runs its maml_trpo example)")
    ap.add_argument("--l2l-examples", help="learn2learn's examples/rl folder (from its sdist)")
    ap.add_argument("--l2l-timeout", type=float, default=180)
    args = ap.parse_args()
    torch.set_num_threads(1)
    wall = time.perf_counter()
    config = RLConfig.from_dict(json.loads((CONFIGS / f"{args.family}-maml.json").read_text()))
    if args.iterations:
        config = replace(config, iterations=args.iterations)
    trained, train_seconds = {}, {}
    for mode in ("maml", "pretrain"):
        start = time.perf_counter()
        trained[mode] = train(replace(config, mode=mode)).theta
        train_seconds[mode] = time.perf_counter() - start
        print(f"{args.family} {mode}: {config.iterations} iterations in {train_seconds[mode]:.0f} s", flush=True)
    thetas = {"maml": trained["maml"], "pretrained": trained["pretrain"],
              "random": config.policy().init(torch.Generator().manual_seed(config.seed))}
    table = returns_table(config, thetas, args.tasks, args.steps, args.episodes, config.seed)
    print(f"\n{args.family}: mean return on {args.tasks} new tasks (95% CI) after k policy-gradient steps")
    print(f"{'policy':<11}" + "".join(f"{f'k={k}':>18}" for k in range(args.steps + 1)))
    for name, row in table.items():
        print(f"{name:<11}" + "".join(f"{m:>10.2f} ± {c:<5.2f}" for m, c in zip(row["mean"], row["ci95"])))
    result = {"family": args.family, "config": config.to_dict(), "tasks": args.tasks, "episodes": args.episodes,
              "returns": table, "train_seconds": train_seconds, "cpu_count": os.cpu_count()}
    result["device"] = device(config, trained["maml"], args.episodes)
    print(f"\ndevice ({result['device']['samples']} samples, {result['device']['parameters']} parameters):",
          ", ".join(f"{k} {v:.3g}" for k, v in result["device"].items() if k not in ("samples", "parameters")))
    if not args.no_speed:
        its = speed(config, args.speed_iterations)
        result["iterations_per_second"] = its
        print(f"\nmeta-iterations/s ({config.meta_batch} tasks x {config.episodes} episodes x 2): vmap "
              f"{its['vmap']:.3f}, per-task loop {its['loop']:.3f} ({its['vmap'] / its['loop']:.1f}x)")
        if args.l2l_python and args.l2l_examples:
            result["learn2learn"] = learn2learn(args.l2l_python, args.l2l_examples, args.speed_iterations,
                                                args.l2l_timeout)
            print("learn2learn maml_trpo:", result["learn2learn"])
    result["wall_seconds"] = time.perf_counter() - wall
    print(f"wall time {result['wall_seconds']:.0f} s")
    print("written", write_result(f"meta_rl_{args.family}", result))


if __name__ == "__main__":
    sys.exit(main())
