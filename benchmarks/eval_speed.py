"""Episodic evaluation speed: ``metaedge eval`` of a ProtoNet run against the per-episode path it replaced.

What it measures, on one run directory (an Omniglot ProtoNet run by default, 5/20-way x 1/5-shot, 600 episodes
each, 15 queries per class, no baselines):

* ``metaedge eval`` (a subprocess of this checkout's CLI, wall clock including start-up and data loading):
  every image of the evaluation split is embedded once (batch norm folded into the convolutions,
  ``channels_last``), episodes are drawn as row indices of the embeddings (``EpisodicFamily.sample_rows``).
* ``per-episode``: the evaluator's previous path, in this process: the same draws from the same seed
  (``sample_batch`` with the evaluator's generator, chunk by chunk), every episode's support and query images
  embedded on their own (``ProtoNet.episode_logits``, evaluation mode) and scored. Its accuracies must equal
  the CLI's: the script fails otherwise.

Repeats alternate the two; medians are reported. Results: a table on stdout and
``benchmarks/results/eval_speed.json``.

Run (from the repository root; the per-episode path takes 3-10 minutes per repeat on 2 busy cores)::

    .venv/bin/python benchmarks/eval_speed.py runs/omni-proto
    .venv/bin/python benchmarks/eval_speed.py runs/omni-proto --episodes 100 --repeats 1   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _protocol import write_json

from metaedge.sdk.evaluate.evaluator import EvalSettings, _default_queries
from metaedge.sdk.run import Run, to_tensors

ROOT = Path(__file__).resolve().parents[1]


def cli_eval(run: Path, s: EvalSettings) -> tuple[float, dict[str, float]]:
    """Wall seconds and ``{"ways/shots": accuracy}`` of ``metaedge eval --json`` in a fresh process."""
    cmd = [str(Path(sys.executable).with_name("metaedge")), "eval", str(run), "--ways", ",".join(map(str, s.ways)),
           "--shots", ",".join(map(str, s.shots)), "--episodes", str(s.tasks), "--seed", str(s.seed),
           "--no-baselines", "--json", "--no-progress"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    rows = json.loads(out.stdout)["rows"]
    return seconds, {f"{r['ways']}/{r['shots']}": r["accuracy"] for r in rows if r["method"].startswith("metaedge")}


def per_episode_eval(run: Run, s: EvalSettings) -> tuple[float, dict[str, float]]:
    """The previous evaluator path on the same draws: seconds and accuracies (see the module docstring)."""
    if run.config.threads > 0:
        torch.set_num_threads(run.config.threads)
    fam, learner = run.family, run.learner
    split = s.split or fam.eval_split
    queries = _default_queries(fam, split, max(s.shots))
    rng = np.random.default_rng(s.seed)
    out = {}
    t0 = time.perf_counter()
    for ways in s.ways:
        for shots in s.shots:
            correct, done = [], 0
            while done < s.tasks:
                n = min(s.chunk, s.tasks - done)
                b = fam.sample_batch(rng, n, shots, queries, split=split, ways=ways)
                xs, ys, xq, _ = to_tensors(run.normalizer.batch(b))
                with torch.no_grad():
                    logits = torch.stack([learner.episode_logits(run.state, *e) for e in zip(xs, ys, xq)])
                correct.append((logits.argmax(-1).numpy() == b.y_query).mean(1))
                done += n
            out[f"{ways}/{shots}"] = float(np.concatenate(correct).mean())
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a ProtoNet run directory (e.g. an Omniglot run)")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--repeats", type=int, default=2, help="alternating repeats of each path")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_speed.json")
    args = p.parse_args(argv)
    settings = EvalSettings(tasks=args.episodes, ways=args.ways, shots=args.shots, steps=[0], baselines=False)
    run = Run.load(args.run)
    if run.learner.name != "protonet":
        print(f"{args.run} is a {run.learner.name} run; pass a ProtoNet run", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"metaedge eval": [], "per-episode": []}
    accuracy: dict[str, dict[str, float]] = {}
    for r in range(args.repeats):
        for name in (list(times) if r % 2 == 0 else list(times)[::-1]):
            seconds, acc = cli_eval(args.run, settings) if name == "metaedge eval" else per_episode_eval(run, settings)
            times[name].append(seconds)
            accuracy[name] = acc
            print(f"  repeat {r}: {name} {seconds:.1f} s", flush=True)
    same = accuracy["metaedge eval"] == accuracy["per-episode"]
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"\n{'setting':>10} {'metaedge eval':>14} {'per-episode':>12}")
    for key in accuracy["per-episode"]:
        print(f"{key:>10} {100 * accuracy['metaedge eval'][key]:>14.4f} {100 * accuracy['per-episode'][key]:>12.4f}")
    print(f"median seconds: metaedge eval {med['metaedge eval']:.1f} (CLI wall, start-up included), per-episode "
          f"{med['per-episode']:.1f} (evaluation loop alone): {med['per-episode'] / med['metaedge eval']:.1f}x; "
          f"accuracies {'identical' if same else 'DIFFER'}")
    write_json(args.out, {
        "benchmark": "eval_speed", "command": " ".join([Path(sys.executable).name, *sys.argv]), "run": str(args.run),
        "settings": {"episodes": args.episodes, "ways": args.ways, "shots": args.shots, "seed": settings.seed,
                     "queries": "evaluator default (15 per class)", "baselines": False},
        "seconds": times, "median_seconds": med, "accuracy": accuracy, "identical_accuracies": same,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
                        "loadavg": list(os.getloadavg()), "threads": run.config.threads},
    })
    print(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
