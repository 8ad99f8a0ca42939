"""Whole ``metaedge train`` runs with default flags against learn2learn: issue 15's must-show 1.

What it measures, per row (MAML and first-order MAML, 1 and 5 inner steps, sinusoid, MLP 1-40-40-1 ReLU,
meta-batch 25, K=10+10, inner lr 0.01, Adam 1e-3, one torch thread):

* ``ours``: the wall time of ``python -m metaedge.cli train --algo A --inner-steps k --iterations 5000 --out DIR
  --no-progress`` (default flags) in a fresh subprocess, from its start to its exit: interpreter start, imports,
  setup, 5,000 iterations with their task sampling, logging and five checkpoints. ``loop_s`` is the trainer's own
  figure for the iterations alone (the last ``seconds`` of ``metrics.jsonl``).
* ``l2l``: learn2learn's iterations/s over ``--l2l-iters`` meta-iterations (``benchmarks/_l2l_maml_worker.py``, the
  per-task loop of its examples, warm, same initial weights and tasks as ``meta_train_speed.py``), and its time for
  5,000 iterations **extrapolated** as ``5000 / median it/s``: its imports and setup are not counted, which favours
  it.

Runs are interleaved: each repeat times half of the learn2learn iterations, one ``metaedge train`` run, then the
other half (one warm learn2learn worker), so both sides of a repeat see the same background load; reported are
the ratio of the medians over ``--repeats`` and the median and minimum of the per-repeat ratios.
Before timing, each row checks that the trainer's default meta-step gives learn2learn's meta-gradient and
weights after one iteration (max abs difference reported). Results: ``benchmarks/results/meta_train_run.json``.

Run (from the repository root)::

    .venv/bin/python benchmarks/meta_train_run.py --l2l-python /path/to/l2l-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _protocol import write_json
from meta_train_speed import ROOT, Ours, WorkerContender, compare, find_l2l_python, initial_weights, make_task_pool

from metaedge.export.bundle import git_commit


def cli_run(algo: str, steps: int, iterations: int, out: Path) -> dict[str, float]:
    """Wall seconds of one ``metaedge train`` subprocess with default flags, and its loop seconds."""
    cmd = [sys.executable, "-m", "metaedge.cli", "train", "--algo", algo, "--inner-steps", str(steps),
           "--iterations", str(iterations), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"metaedge train failed ({done.returncode}): {done.stderr[-2000:]}")
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["iteration"] == iterations
    return {"wall_s": wall, "loop_s": float(last["seconds"]), "final_meta_loss": float(last["meta_loss"])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--l2l-python", default=None, help="learn2learn interpreter (see meta_train_speed.py)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per row")
    p.add_argument("--iterations", type=int, default=5000, help="iterations of each metaedge train run")
    p.add_argument("--l2l-iters", type=int, default=60, help="learn2learn iterations per timed repeat")
    p.add_argument("--warmup", type=int, default=5, help="untimed learn2learn warm-up iterations per row")
    p.add_argument("--rows", nargs="+", default=["maml:1", "fomaml:1", "maml:5", "fomaml:5"], help="ALGO:STEPS")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "meta_train_run.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    l2l_python = find_l2l_python(args.l2l_python)
    if l2l_python is None:
        print("learn2learn venv not found; pass --l2l-python (see meta_train_speed.py)", file=sys.stderr)
        return 2
    pool = make_task_pool(16, 0)
    weights = initial_weights(0)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meta_train_run_") as tmp:
        files = {"dir": tmp, "data": str(Path(tmp) / "tasks.npz"), "weights": str(Path(tmp) / "init.npz")}
        np.savez(files["data"], **pool)
        np.savez(files["weights"], **{f"w{i}": w.numpy() for i, w in enumerate(weights.values())})
        l2l = WorkerContender("l2l", "l2l", str(l2l_python), files, "per-task", Path(tmp) / "l2l.log")
        ours_step = Ours(pool, weights)
        try:
            for row in args.rows:
                algo, steps = row.split(":")[0], int(row.split(":")[1])
                ours_step.setup(algo, steps, 1)
                l2l.setup(algo, steps, 1)
                check = compare(l2l.check(), ours_step.check())
                l2l.setup(algo, steps, 1)
                l2l.run(args.warmup)
                l2l_rates, ours_runs = [], []
                half = max(args.l2l_iters // 2, 1)
                for r in range(args.repeats):
                    before = l2l.run(half)
                    ours_runs.append(cli_run(algo, steps, args.iterations, Path(tmp) / f"{algo}{steps}_{r}"))
                    l2l_rates.append(2 * half / (before + l2l.run(half)))
                paired = [args.iterations / rate / run["wall_s"] for rate, run in zip(l2l_rates, ours_runs)]
                l2l_med = statistics.median(l2l_rates)
                wall_med = statistics.median(run["wall_s"] for run in ours_runs)
                l2l_time = args.iterations / l2l_med
                rows.append({"algo": algo, "inner_steps": steps, "iterations": args.iterations,
                             "ours_runs": ours_runs, "ours_wall_s_median": wall_med,
                             "ours_loop_s_median": statistics.median(run["loop_s"] for run in ours_runs),
                             "l2l_its_per_s": l2l_rates, "l2l_its_per_s_median": l2l_med,
                             "l2l_extrapolated_s": l2l_time, "ratio": l2l_time / wall_med,
                             "paired_ratios": paired, "paired_ratio_median": statistics.median(paired),
                             "paired_ratio_min": min(paired), "check_vs_l2l": check})
                print(f"  {algo} steps={steps}: ours {wall_med:.2f} s for {args.iterations} it (loop "
                      f"{rows[-1]['ours_loop_s_median']:.2f} s); l2l {l2l_med:.1f} it/s -> {l2l_time:.1f} s "
                      f"(extrapolated); {l2l_time / wall_med:.1f}x (per repeat: median {statistics.median(paired):.1f}x"
                      f", min {min(paired):.1f}x); max|dgrad| {check['grad_max_abs_diff']:.1e}",
                      flush=True)
                write_json(Path(args.out), _record(args, rows, l2l.info, time.perf_counter() - t_start))
        finally:
            l2l.close()
    print()
    print(f"{'row':12} {'ours s':>8} {'l2l it/s':>9} {'l2l s (extrap.)':>16} {'ratio':>7} {'min/repeat':>10}")
    for r in rows:
        print(f"{r['algo'] + '-' + str(r['inner_steps']):12} {r['ours_wall_s_median']:>8.2f} "
              f"{r['l2l_its_per_s_median']:>9.1f} {r['l2l_extrapolated_s']:>16.1f} {r['ratio']:>6.1f}x "
              f"{r['paired_ratio_min']:>9.1f}x")
    print(f"wrote {args.out}")
    return 0


def _record(args: argparse.Namespace, rows: list[dict[str, Any]], l2l_info: dict[str, Any],
            seconds: float) -> dict[str, Any]:
    return {
        "benchmark": "meta_train_run",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "ours": f"python -m metaedge.cli train --algo A --inner-steps k --iterations {args.iterations} --out DIR "
                "--no-progress (default flags; wall time of the subprocess, start to exit)",
        "l2l": "learn2learn 0.2.0 MAML per-task loop, warm worker; 5000 / median it/s (extrapolated, setup and "
               "imports not counted)",
        "setting": {"family": "sinusoid", "model": "MLP 1-40-40-1 relu", "shots": 10, "queries": 10,
                    "meta_batch": 25, "inner_lr": 0.01, "meta_lr": 1e-3, "threads": 1},
        "commit": git_commit(),
        "protocol": {"repeats": args.repeats, "l2l_iters": args.l2l_iters, "warmup": args.warmup,
                     "statistic": "ratio of medians; per-repeat ratios beside it",
                     "order": "per repeat: l2l half, metaedge train run, l2l half"},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "l2l": l2l_info,
                        "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()), "machine": platform.machine()},
        "total_seconds": seconds,
        "results": rows,
    }


if __name__ == "__main__":
    raise SystemExit(main())
