"""What each part of one ``metaedge train`` iteration costs, before and after issue 15's changes, side by side.

One sinusoid meta-iteration (meta-batch 25, K=10+10, MLP 1-40-40-1 ReLU, one torch thread) is cut into its parts;
each part is timed for its old and new form, interleaved, median microseconds over ``--repeats`` runs of
``--iters`` calls:

* ``sample``: ``Sinusoid.sample_batch`` in one call (new) against the per-task loop of ``TaskFamily.sample_batch``
  (old); the draws are the same bit for bit (``tests/test_tasks.py``);
* ``normalize``: the identity normaliser passing the batch through (new) against standardising it anyway (old);
* ``meta_gradient`` for MAML and first-order MAML, 1 step: ``mlp_fast`` (new) against ``learner.meta_gradient``
  (eager autograd + vmap, old);
* ``adam``: ``sdk.optim.FusedAdam`` (new) against ``torch.optim.Adam()`` with torch's CPU defaults (old) and
  ``foreach=True``;
* ``optimizer_import``: seconds to construct the first optimiser in a fresh interpreter (after ``import torch``):
  ``torch.optim.Adam`` imports ``torch._dynamo``, ``FusedAdam`` does not (subprocesses, median of ``--imports``).

Results: ``benchmarks/results/train_loop_parts.json``. Run: ``.venv/bin/python benchmarks/train_loop_parts.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _protocol import write_json

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.learners import make_learner
from metaedge.sdk.models import build_model
from metaedge.sdk.normalize import Normalizer
from metaedge.sdk.optim import FusedAdam
from metaedge.sdk.run import task_rng, to_tensors
from metaedge.sdk.tasks import TaskBatch, TaskFamily, make_family
from metaedge.sdk.train import meta_gradient_for

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"kind": "mlp", "in_dim": 1, "out_dim": 1, "hidden": [40, 40], "activation": "relu"}


def interleaved(contenders: dict[str, Callable[[], object]], iters: int, repeats: int) -> dict[str, float]:
    """Median microseconds per call of each contender, timed in rotating order."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for fn in contenders.values():
        fn()
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(iters):
                contenders[n]()
            times[n].append((time.perf_counter() - t0) / iters * 1e6)
    return {n: statistics.median(v) for n, v in times.items()}


def optimizer_import_seconds(kind: str, runs: int) -> float:
    """Median seconds to build the first optimiser of ``kind`` in a fresh interpreter that has imported torch."""
    make = {"torch.optim.Adam": "torch.optim.Adam(p, lr=1e-3)",
            "FusedAdam": "__import__('metaedge.sdk.optim', fromlist=['x']).FusedAdam(p, lr=1e-3)"}[kind]
    code = ("import time, torch; p = [torch.zeros(3)]; t = time.perf_counter(); " + make
            + "; print(time.perf_counter() - t)")
    out = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout.strip()) for _ in range(runs)]
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--imports", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_loop_parts.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    family = make_family("sinusoid")
    counter = iter(range(10**9))
    parts: dict[str, dict[str, float]] = {}
    parts["sample"] = interleaved({
        "new": lambda: family.sample_batch(task_rng(0, next(counter)), 25, 10, 10),
        "old": lambda: TaskFamily.sample_batch(family, task_rng(0, next(counter)), 25, 10, 10),
    }, args.iters, args.repeats)
    batch = family.sample_batch(task_rng(0, 0), 25, 10, 10)
    norm = Normalizer.identity(1, 1)
    parts["normalize"] = interleaved({
        "new": lambda: norm.batch(batch),
        "old": lambda: TaskBatch(norm.x(batch.x_support), norm.y(batch.y_support), norm.x(batch.x_query),
                                 norm.y(batch.y_query), batch.info),
    }, args.iters, args.repeats)
    xs, ys, xq, yq = to_tensors(batch)
    for algo in ("maml", "fomaml"):
        learner = make_learner(algo, build_model(MODEL), loss="mse", inner_lr=0.01, inner_steps=1)
        state = learner.init_state()
        fast = meta_gradient_for(TrainConfig(algo=algo), learner)
        parts[f"meta_gradient_{algo}"] = interleaved({
            "new": lambda f=fast, s=state: f(s, xs, ys, xq, yq, denominator=25),
            "old": lambda lr=learner, s=state: lr.meta_gradient(s, xs, ys, xq, yq, denominator=25),
        }, max(args.iters // 4, 10), args.repeats)
    learner = make_learner("maml", build_model(MODEL), loss="mse")
    optimizers: dict[str, object] = {}
    for name, make in (("new", lambda ps: FusedAdam(ps, lr=1e-3)), ("old", lambda ps: torch.optim.Adam(ps, lr=1e-3)),
                       ("foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True))):
        params = [t.clone() for t in learner.init_state()["params"].values()]
        for t in params:
            t.grad = torch.randn_like(t) * 1e-2
        optimizers[name] = make(params)
    parts["adam"] = interleaved({n: o.step for n, o in optimizers.items()}, args.iters, args.repeats)
    imports = {k: optimizer_import_seconds(k, args.imports) for k in ("torch.optim.Adam", "FusedAdam")}
    print(f"{'part':22} {'old us':>9} {'new us':>9} {'saved us':>9}")
    for name, t in parts.items():
        print(f"{name:22} {t['old']:>9.1f} {t['new']:>9.1f} {t['old'] - t['new']:>9.1f}"
              + (f"   (foreach=True: {t['foreach']:.1f})" if "foreach" in t else ""))
    print(f"first optimiser in a fresh interpreter: torch.optim.Adam {imports['torch.optim.Adam']:.2f} s, "
          f"FusedAdam {imports['FusedAdam']:.3f} s")
    write_json(Path(args.out), {
        "benchmark": "train_loop_parts", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "unit": "median microseconds per call", "parts": parts, "optimizer_import_seconds": imports,
        "protocol": {"iters": args.iters, "repeats": args.repeats, "order": "interleaved, rotating"},
        "environment": {"torch": torch.__version__, "threads": 1, "loadavg": list(os.getloadavg())},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
