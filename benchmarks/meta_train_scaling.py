"""How meta-training cost grows: iterations/s against meta-batch and inner steps, metaedge against learn2learn.

Two sweeps of second-order MAML on the sinusoid benchmark (MLP 1-40-40-1 ReLU, K=10+10, one torch thread):

* meta-batch 1, 4, 16, 64, 256 tasks at 1 inner step;
* inner steps 1, 2, 5, 10 at meta-batch 25.

Contenders are ``meta_train_speed.py``'s: ``ours`` is the trainer's default meta-step (hand-derived batched MLP
passes + fused Adam), ``l2l`` learn2learn's per-task loop in its own venv; ``--eager`` adds metaedge's eager
autograd path (vmap). Each point: a one-iteration check that the meta-gradients agree, warm-up, then interleaved
repeats of a timed run sized to about ``--seconds`` s from the warm-up's rate; the median it/s is reported.
Results: ``benchmarks/results/meta_train_scaling.json``; plot: ``docs/scaling_meta_train.png``.

Run (from the repository root; the allocator settings are those the trainer sets for itself, see
``docs/results.md``, "Speed by default", and the learn2learn worker inherits them)::

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 \
        .venv/bin/python benchmarks/meta_train_scaling.py --l2l-python /path/to/l2l-venv/bin/python --eager
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _protocol import write_json
from meta_train_speed import ROOT, Ours, WorkerContender, compare, find_l2l_python, initial_weights, make_task_pool

Contender = Ours | WorkerContender
#: glibc allocator settings recorded with the results: with its defaults every tensor above the (dynamic) mmap
#: threshold is fresh mmap pages, page-faulted in on each use, which dominates from about 64 tasks on
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def time_point(contenders: list[Contender], algo: str, steps: int, repeats: int, seconds: float,
               warmup: int) -> dict[str, Any]:
    """Check, warm up and time one sweep point; returns median it/s per contender and the check."""
    checks = {}
    for c in contenders:
        c.setup(algo, steps, 1)
        checks[c.name] = c.check()
    check = {c.name: compare(checks[contenders[0].name], checks[c.name]) for c in contenders[1:]}
    iters: dict[str, int] = {}
    for c in contenders:
        c.setup(algo, steps, 1)
        rate = warmup / c.run(warmup)
        iters[c.name] = int(min(2000, max(3, rate * seconds)))
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(repeats):
        order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
        for c in order:
            rates[c.name].append(iters[c.name] / c.run(iters[c.name]))
    return {"its_per_s": rates, "median_its_per_s": {n: statistics.median(v) for n, v in rates.items()},
            "iters_per_repeat": iters, "check_vs_ours": check}


def plot(record: dict[str, Any], out: Path) -> None:
    """Two log-log panels: it/s against meta-batch and against inner steps, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"ours": ("C0", "metaedge (default path)"), "eager": ("C2", "metaedge eager autograd (vmap)"),
              "l2l": ("C3", "learn2learn 0.2.0 MAML")}
    for ax, sweep, key, label in ((axes[0], "meta_batch", "meta_batch", "meta-batch (tasks), 1 inner step"),
                                  (axes[1], "inner_steps", "inner_steps", "inner steps, meta-batch 25")):
        points = record["sweeps"][sweep]
        xs = [p[key] for p in points]
        for name, (color, text) in styles.items():
            if name not in points[0]["median_its_per_s"]:
                continue
            ys = [p["median_its_per_s"][name] for p in points]
            ax.plot(xs, ys, "o-", color=color, label=text)
        for p in points:
            ratio = p["median_its_per_s"]["ours"] / p["median_its_per_s"]["l2l"]
            ax.annotate(f"{ratio:.0f}x", (p[key], p["median_its_per_s"]["ours"]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=8, color="C0")
        ax.set_xscale("log", base=2 if sweep == "meta_batch" else 10)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(label)
        ax.set_ylabel("meta-iterations / s")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Second-order MAML, sinusoid MLP 1-40-40-1, 1 CPU thread (labels: metaedge / learn2learn)",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--l2l-python", default=None, help="learn2learn interpreter (see meta_train_speed.py)")
    p.add_argument("--meta-batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--inner-steps", type=int, nargs="+", default=[1, 2, 5, 10])
    p.add_argument("--algo", default="maml", choices=["maml", "fomaml"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.6, help="target length of one timed run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eager", action="store_true", help="also time metaedge's eager autograd path")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "meta_train_scaling.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "scaling_meta_train.png"))
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        import json

        plot(json.loads(Path(args.out).read_text()), Path(args.plot))
        return 0
    l2l_python = find_l2l_python(args.l2l_python)
    if l2l_python is None:
        print("learn2learn venv not found; pass --l2l-python (see meta_train_speed.py)", file=sys.stderr)
        return 2
    weights = initial_weights(0)
    record: dict[str, Any] = {
        "benchmark": "meta_train_scaling", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "algo": args.algo, "setting": {"family": "sinusoid", "model": "MLP 1-40-40-1 relu", "shots": 10,
                                       "queries": 10, "inner_lr": 0.01, "meta_lr": 1e-3, "threads": 1},
        "protocol": {"repeats": args.repeats, "seconds_per_run": args.seconds, "warmup": args.warmup,
                     "statistic": "median it/s", "order": "interleaved, rotating per repeat"},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpu_count": os.cpu_count(), "machine": platform.machine(),
                        # both contenders inherit these (the l2l worker is a subprocess of this one)
                        "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV}},
        "sweeps": {"meta_batch": [], "inner_steps": []},
    }
    t_start = time.perf_counter()
    points = [("meta_batch", b, 1) for b in args.meta_batches] + [("inner_steps", 25, k) for k in args.inner_steps]
    with tempfile.TemporaryDirectory(prefix="meta_train_scaling_") as tmp:
        weights_file = str(Path(tmp) / "init.npz")
        np.savez(weights_file, **{f"w{i}": w.numpy() for i, w in enumerate(weights.values())})
        pools: dict[int, dict[str, np.ndarray]] = {}
        files: dict[int, str] = {}
        for b in sorted({p[1] for p in points}):
            pools[b] = make_task_pool(4, 0, meta_batch=b)
            files[b] = str(Path(tmp) / f"tasks_{b}.npz")
            np.savez(files[b], **pools[b])
        worker_files = {"dir": tmp, "data": files[points[0][1]], "weights": weights_file}
        l2l = WorkerContender("l2l", "l2l", str(l2l_python), worker_files, "per-task", Path(tmp) / "l2l.log")
        ours = Ours(pools[points[0][1]], weights)
        contenders: list[Contender] = [ours, l2l]
        if args.eager:
            contenders.append(Ours(pools[points[0][1]], weights, path="eager", name="eager"))
        try:
            for sweep, batch, steps in points:
                l2l.files = {**worker_files, "data": files[batch]}
                for c in contenders:
                    if isinstance(c, Ours):
                        c.set_pool(pools[batch])
                result = time_point(contenders, args.algo, steps, args.repeats, args.seconds, args.warmup)
                record["sweeps"][sweep].append({"meta_batch": batch, "inner_steps": steps, **result})
                med = result["median_its_per_s"]
                print(f"  {sweep}: meta-batch {batch:>3}, steps {steps:>2}: "
                      + ", ".join(f"{n} {v:.1f} it/s" for n, v in med.items())
                      + f" ({med['ours'] / med['l2l']:.1f}x); max|dgrad| "
                      + f"{max(c['grad_max_abs_diff'] for c in result['check_vs_ours'].values()):.1e}", flush=True)
                record["environment"]["loadavg"] = list(os.getloadavg())
                record["total_seconds"] = time.perf_counter() - t_start
                write_json(Path(args.out), record)
        finally:
            for c in contenders:
                c.close()
    plot(record, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
