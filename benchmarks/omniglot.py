"""Omniglot few-shot classification (Vinyals split, 28x28, rotations as classes): ProtoNets and a
gradient-based learner, evaluated on the Vinyals *val* classes (the test characters are not in the data).

ProtoNets follow Snell et al. 2017: Conv4, 60-way 5-shot 5-query training episodes, Adam 1e-3 (halving
is approximated by the cosine schedule), evaluated 5-way and 20-way 1-shot with 5-way/20-way episodes.
The gradient-based learner is first-order MAML with per-task batch-norm statistics (5-way 1-shot,
meta-batch 32, 1 query, 5 inner steps at 0.4 as in the MAML paper's Omniglot setup; fewer iterations).

Published test-split figures: ProtoNets 98.8 / 96.0, MAML 98.7 / 95.8 (5-way 1-shot / 20-way 1-shot).
On 2 CPU cores the budget is minutes, not the papers' hours: the wall time is reported with the accuracy.

    python benchmarks/omniglot.py [--proto-iterations 2000] [--maml-iterations 1000] [--episodes 600]
        [--device cuda] [--budget-minutes 10]

``--budget-minutes`` caps each learner's training: a short timed run (``--calibrate-iterations``) measures the
setup and the seconds per iteration, which set the iterations that fit, at most the requested ones; the result
records both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import train_or_resume, write_result

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import EvalSettings, evaluate, format_table
from metaedge.sdk.evaluate.report import write_report
from metaedge.sdk.run import Run
from metaedge.sdk.train import train


def fitting_iterations(config: TrainConfig, budget_s: float, calibrate: int) -> int:
    """The iterations of ``config`` that fit in ``budget_s`` seconds of a run: a timed run of ``calibrate`` ones
    gives the setup time (data loading, model building) and the seconds per iteration of the loop itself."""
    loop: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(replace(config, iterations=calibrate, log_every=calibrate, checkpoint_every=calibrate), Path(tmp) / "r",
              progress=False, on_log=lambda record: loop.append(record["seconds"]))
        total = time.perf_counter() - t0
    per_iteration, setup = loop[-1] / calibrate, total - loop[-1]
    return max(1, min(config.iterations, int((budget_s - setup) / per_iteration)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-iterations", type=int, default=2000)
    parser.add_argument("--maml-iterations", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-omniglot"))
    parser.add_argument("--report", type=Path, default=None, help="write a report directory for the ProtoNet run")
    parser.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda, cuda:1)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="cap on each learner's training time")
    parser.add_argument("--calibrate-iterations", type=int, default=30)
    parser.add_argument("--learners", default="protonet,fomaml", help="comma-separated: protonet, fomaml")
    parser.add_argument("--result", help="results/<name>.json to write [omniglot, or omniglot_<device> off the CPU]")
    args = parser.parse_args()
    configs = {
        "protonet": TrainConfig(family="omniglot", algo="protonet", ways=60, shots=5, queries=5, meta_batch=1,
                                iterations=args.proto_iterations, meta_lr=1e-3, lr_schedule="cosine",
                                threads=args.threads, log_every=100, checkpoint_every=500, device=args.device),
        "fomaml": TrainConfig(family="omniglot", algo="fomaml", ways=5, shots=1, queries=1, meta_batch=32,
                              inner_steps=5, inner_lr=0.4, iterations=args.maml_iterations, meta_lr=1e-3,
                              threads=args.threads, log_every=100, checkpoint_every=250, device=args.device),
    }
    configs = {name: configs[name] for name in args.learners.split(",")}
    requested = {name: cfg.iterations for name, cfg in configs.items()}
    if args.budget_minutes:
        configs = {name: replace(cfg, iterations=fitting_iterations(cfg, 60 * args.budget_minutes,
                                                                     args.calibrate_iterations))
                   for name, cfg in configs.items()}
    results = {}
    for name, cfg in configs.items():
        path, wall = train_or_resume(cfg, args.runs / name, progress=False)
        ways = [5, 20] if name == "protonet" else [5]
        report = evaluate(Run.load(path), EvalSettings(tasks=args.episodes, shots=[1, 5], ways=ways, steps=[0, 5, 10],
                                                        baselines=name == "protonet", pretrain_steps=1000))
        print(format_table(report), flush=True)
        if name == "protonet" and args.report:
            write_report(report, args.report, Run.load(path).family)
        results[name] = {"train_wall_seconds": wall, "iterations": cfg.iterations,
                         "requested_iterations": requested[name], "device": args.device, "report": report}
    print("\nOmniglot, Vinyals val classes: accuracy % ± 95% CI (published test: ProtoNets 98.8/96.0, MAML 98.7/95.8)")
    for name, r in results.items():
        for row in r["report"]["rows"]:
            if row["method"].startswith("metaedge") and row["shots"] == 1 and row["steps"] in (0, 10):
                acc = f"{100 * row['accuracy']:.2f} ± {100 * row['accuracy_ci']:.2f}"
                budget = f"trained {r['iterations']} it, {r['train_wall_seconds']:.0f} s"
                print(f"{name:9s} {row['ways']:2d}-way 1-shot steps={row['steps']}: {acc}  ({budget})")
    name = args.result or ("omniglot" if args.device == "cpu" else f"omniglot_{args.device.split(':')[0]}")
    print(f"written to {write_result(name, {'results': results, 'budget_minutes': args.budget_minutes})}")


if __name__ == "__main__":
    main()
