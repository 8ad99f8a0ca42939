"""Few-shot classification training speed: metaedge's ProtoNet and MAML learners vs learn2learn 0.2.0.

What it measures: training episodes per second (median over interleaved repeats), one thread, on
Omniglot-sized synthetic episodes (binary 1x28x28 images with 15% "ink": throughput does not depend on the
pixels, and unlike Gaussian noise they keep 5 inner steps at lr 0.4 well conditioned for the checks).
Both sides use the same Conv4 (4 x [conv 3x3 64ch, batch norm, ReLU, max-pool 2], 64-d embedding), the
same episodes (one ``.npz``) and the same initial weights (ours, copied into learn2learn's model by an
explicit name map: the two order their parameters differently).

* ``protonet``: Prototypical Networks, 20-way 5-shot 5-query, one episode per step. Ours:
  ``make_learner("protonet", conv4 without head)``, ``learner.meta_gradient`` then Adam on
  ``state["params"]`` (as ``metaedge.sdk.train``). Comparator: the step of learn2learn's
  ``examples/vision/protonet_*.py`` / easyfsl (learn2learn has no ProtoNet class) on learn2learn's
  ``CNN4Backbone``: forward of support + query in training mode, class-mean prototypes, negative squared
  Euclidean distance, cross-entropy, ``backward()``, ``Adam.step()``.
* ``maml`` / ``fomaml``: the MAML paper's Omniglot setting: 5-way 1-shot, 1 query per class, meta-batch
  32, inner lr 0.4, 1 and 5 inner steps, second and first order; one step = 32 episodes. Ours:
  ``make_learner("maml" | "fomaml", conv4 with a 5-way head, inner_lr=0.4)`` (per-task batch statistics;
  ``vmap`` over tasks for first order, a task loop for second order with batch norm). Comparator:
  ``l2l.algorithms.MAML(CNN4, lr=0.4, first_order=...)`` with the per-task ``clone()``/``adapt()``/
  ``backward()`` loop of learn2learn's ``examples/vision/maml_omniglot.py`` (batch norm in training mode).

learn2learn runs in a subprocess of its venv (``benchmarks/_l2l_classification_worker.py``); contenders,
line protocol, interleaving and comparison come from ``benchmarks/meta_train_speed.py`` (imported). Per
setting: one step in float64 and one in float32 from the same weights on the same episode on both sides,
compared (meta-gradient relative to its largest entry, loss, weights after Adam), then a warm-up step, then
``--repeats`` interleaved timed runs of each (rotating order). Results: a table on stdout and
``benchmarks/results/classification_speed.json`` (rewritten after every setting).

Run (from the repository root; about 4-5 minutes on 2 busy cores)::

    .venv/bin/python benchmarks/classification_speed.py            # protonet, maml, fomaml x 1 and 5 steps
    .venv/bin/python benchmarks/classification_speed.py --quick    # smoke test (~30 s)
    .venv/bin/python benchmarks/classification_speed.py --threads 1 2 --l2l-python .l2l-venv/venv/bin/python

Memory allocator: with glibc's defaults the large conv activations (ProtoNet: 40 MB for the first layer)
are fresh ``mmap`` pages every step, and page faults take ~40% of a ProtoNet step, varying with each
process's allocator history (+-15% between otherwise identical processes). metaedge's trainer raises glibc's
mmap and trim thresholds itself (``metaedge.sdk.allocator.tune_allocator``, ``mallopt``), and so does the
metaedge side here; learn2learn runs with the glibc defaults it ships with (its users set no allocator), so
the default run compares the two as users get them. For the like-for-like row (compute alone), give both
processes the same fixed allocator through the environment, which ``tune_allocator`` then leaves alone (the
JSON records each side's allocator)::

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 \
        .venv/bin/python benchmarks/classification_speed.py --out benchmarks/results/classification_speed_malloc.json
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import meta_train_speed as mts
import numpy as np
import torch
from _protocol import write_json
from meta_train_speed import Setting, WorkerContender, bench_setting, compare, find_l2l_python, median

from metaedge.sdk.allocator import THRESHOLD, tune_allocator
from metaedge.sdk.learners import make_learner
from metaedge.sdk.models import build_model

ROOT = mts.ROOT
WORKER = Path(__file__).resolve().parent / "_l2l_classification_worker.py"
INPUT = (1, 28, 28)
#: synthetic Omniglot-like images: binary pixels, this fraction "ink" (random normal pixels make 5 inner steps at
#: lr 0.4 so ill-conditioned that float32 rounding alone moves the meta-gradient by ~1e-2 relative)
INK = 0.15
META_LR = 1e-3
INNER_LR = 0.4
MAML_WAYS = 5
#: default training steps per timed repeat (about 1-5 s each here) by (algo kind, inner steps); otherwise 1
DEFAULT_ITERS = {("protonet", 0): 3, ("maml", 1): 2}


def conv4(out_dim: int) -> dict[str, Any]:
    return {"kind": "conv4", "in_channels": 1, "out_dim": out_dim, "width": 64, "input_size": 28, "norm": "batch"}


def l2l_name(ours: str, protonet: bool) -> str:
    """learn2learn's name for our Conv4 parameter ``ours``.

    Ours: ``body.{4b}.*`` conv, ``body.{4b+1}.*`` batch norm of block ``b``, ``head.*``. learn2learn:
    ``[features.]{b}.conv.*``, ``[features.]{b}.normalize.*``, ``classifier.*`` (``CNN4Backbone`` for
    ProtoNets has no ``features.`` prefix and no classifier).
    """
    if ours.startswith("head."):
        return "classifier." + ours.split(".", 1)[1]
    body, index, leaf = ours.split(".")
    block, position = divmod(int(index), 4)
    if body != "body" or position not in (0, 1):
        raise ValueError(f"no learn2learn counterpart for parameter {ours!r}")
    return f"{'' if protonet else 'features.'}{block}.{('conv', 'normalize')[position]}.{leaf}"


@dataclass
class Suite:
    """Episodes and initial weights of one model (ProtoNet embedding net or MAML 5-way classifier)."""

    kind: str
    pool: dict[str, np.ndarray]
    weights: dict[str, torch.Tensor]
    episodes_per_step: int
    files: dict[str, str]


def make_suite(kind: str, args: argparse.Namespace, tmp: Path) -> Suite:
    """Synthetic episodes ``(pool, T, n, 1, 28, 28)`` + our freshly initialised weights, also saved for the worker."""
    rng = np.random.default_rng([args.seed, 0 if kind == "protonet" else 1])
    if kind == "protonet":
        ways, shots, queries, tasks = args.ways, args.shots, args.queries, 1
    else:
        ways, shots, queries, tasks = MAML_WAYS, 1, 1, args.meta_batch
    n = args.pool
    # support sorted by class (the learn2learn ProtoNet example sorts it); query labels in random order
    ys = np.broadcast_to(np.repeat(np.arange(ways), shots), (n, tasks, ways * shots)).copy()
    yq = np.stack([[rng.permutation(np.repeat(np.arange(ways), queries)) for _ in range(tasks)] for _ in range(n)])
    pool = {
        "xs": (rng.random((n, tasks, ways * shots, *INPUT)) < INK).astype(np.float32),
        "ys": ys.astype(np.int64),
        "xq": (rng.random((n, tasks, ways * queries, *INPUT)) < INK).astype(np.float32),
        "yq": yq.astype(np.int64),
    }
    torch.manual_seed(args.seed)
    model = build_model(conv4(0 if kind == "protonet" else MAML_WAYS))
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    files = {"dir": str(tmp), "data": str(tmp / f"{kind}_tasks.npz"), "weights": str(tmp / f"{kind}_init.npz")}
    np.savez(files["data"], **pool)
    np.savez(files["weights"], **{f"w{i}": w.numpy() for i, w in enumerate(weights.values())})
    return Suite(kind, pool, weights, tasks, files)


def suite_kind(algo: str) -> str:
    return "protonet" if algo == "protonet" else "maml"


class Ours(mts.Ours):
    """metaedge's training step (``meta_gradient`` + Adam, as ``metaedge.sdk.train``) on a classification suite;
    ``check``/``run`` are those of the sinusoid benchmark."""

    def __init__(self, suites: dict[str, Suite]) -> None:
        first = next(iter(suites.values()))
        super().__init__(first.pool, first.weights)
        self.suites = suites
        self.loss = float("nan")
        self.last_check: dict[str, np.ndarray] = {}
        self.dtype = "float32"

    def setup(self, algo: str, inner_steps: int, threads: int) -> None:
        tune_allocator()  # as metaedge.sdk.train does (once per process; the user's MALLOC_* env wins)
        torch.set_num_threads(threads)
        suite = self.suites[suite_kind(algo)]
        dtype = getattr(torch, self.dtype)
        self.data = tuple(torch.from_numpy(suite.pool[k]) for k in ("xs", "ys", "xq", "yq"))
        self.data = tuple(t.to(dtype) if t.is_floating_point() else t for t in self.data)
        self.weights, self.pool, self.it = suite.weights, int(suite.pool["xs"].shape[0]), 0
        model = build_model(conv4(0 if algo == "protonet" else MAML_WAYS))
        options = {} if algo == "protonet" else {"inner_lr": INNER_LR, "inner_steps": inner_steps}
        learner = make_learner(algo, model, loss="cross_entropy", **options)
        state = {g: {k: v.to(dtype) if v.is_floating_point() else v for k, v in part.items()}
                 for g, part in learner.init_state().items()}
        for n, w in self.weights.items():
            state["params"][n].copy_(w)
        for rate in state["rates"].values():  # init_state made them float32: 0.4 would be off by 1.5e-8 in float64
            rate.fill_(INNER_LR)
        trainable = [t.requires_grad_(False) for key in learner.trainable_keys() for t in state[key].values()]
        optimizer = torch.optim.Adam(trainable, lr=META_LR)
        xs_all, ys_all, xq_all, yq_all = self.data
        tasks = int(xs_all.shape[1])
        self.state = state

        def step(b: int) -> float:
            grads, losses = learner.meta_gradient(state, xs_all[b], ys_all[b], xq_all[b], yq_all[b],
                                                  denominator=tasks)
            flat = [grads[key][n] for key in learner.trainable_keys() for n in state[key]]
            for p, g in zip(trainable, flat, strict=True):
                p.grad = g
            optimizer.step()
            self.grads = grads["params"]
            self.loss = losses.sum().item() / tasks
            return self.loss

        self.step = step

    def check(self) -> dict[str, np.ndarray]:
        self.last_check = {**super().check(), "loss": np.float64(self.loss)}
        return self.last_check


class L2L(WorkerContender):
    """learn2learn in its venv, driven over the sinusoid benchmark's line protocol (``_call``/``check``/``run``)."""

    def __init__(self, python: str, suites: dict[str, Suite], log: Path) -> None:
        super().__init__("l2l", "l2l", python, next(iter(suites.values())).files, "per-task", log, worker=WORKER)
        self.suites = suites
        self.last_check: dict[str, np.ndarray] = {}
        self.dtype = "float32"

    def check(self) -> dict[str, np.ndarray]:
        self.last_check = super().check()
        return self.last_check

    def setup(self, algo: str, inner_steps: int, threads: int) -> None:
        suite = self.suites[suite_kind(algo)]
        self.files = suite.files
        names = [l2l_name(n, algo == "protonet") for n in suite.weights]
        self.info = self._call(
            {
                "cmd": "setup",
                "algo": algo,
                "inner_steps": inner_steps,
                "inner_lr": INNER_LR,
                "meta_lr": META_LR,
                "threads": threads,
                "data": suite.files["data"],
                "weights": suite.files["weights"],
                "names": names,
                "dtype": self.dtype,
            }
        )


def check_record(ours: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """``compare`` (max abs differences) plus the relative meta-gradient and loss differences."""
    rec = compare(ours, other)
    rec["grad_rel_diff"] = rec["grad_max_abs_diff"] / rec["grad_max_abs"]
    # conv biases feed batch norm, so their gradient is 0 up to round-off (~1e-9) and Adam's first step,
    # ~lr * sign(grad), differs by up to 2 * lr between the sides; the weights check leaves such tensors out
    live = [k[1:] for k in ours if k.startswith("g") and np.abs(ours[k]).max() > 1e-6 * rec["grad_max_abs"]]
    rec["weights_max_abs_diff_nonzero_grad"] = max(float(np.abs(ours[f"w{i}"] - other[f"w{i}"]).max()) for i in live)
    rec["loss_ours"], rec["loss_other"] = float(ours["loss"]), float(other["loss"])
    rec["loss_rel_diff"] = abs(rec["loss_ours"] - rec["loss_other"]) / abs(rec["loss_ours"])
    return rec


def cross_check(setting: Setting, contenders: list[Any], dtype: str) -> dict[str, float]:
    """One step of each contender from the same weights on the same episode, in ``dtype``."""
    for c in contenders:
        c.dtype = dtype
        c.setup(setting.algo, setting.inner_steps, setting.threads)
        c.check()
        c.dtype = "float32"
    return check_record(contenders[0].last_check, contenders[1].last_check)


def label(s: Setting, args: argparse.Namespace) -> str:
    if s.algo == "protonet":
        return f"protonet {args.ways}w{args.shots}s{args.queries}q"
    return f"{s.algo} 5w1s x{args.meta_batch} steps={s.inner_steps}"


def episodes_per_step(s: Setting, suites: dict[str, Suite]) -> int:
    return suites[suite_kind(s.algo)].episodes_per_step


def print_table(settings: list[Setting], suites: dict[str, Suite], args: argparse.Namespace) -> None:
    head = (f"{'setting':30} {'thr':>3} {'ours ep/s':>10} {'l2l ep/s':>10} {'ours/l2l':>9} "
            f"{'grad rel':>9} {'loss rel':>9} {'max|dw|*':>9} {'f64 rel':>9}")
    print(head)
    print("-" * len(head))
    for s in settings:
        if not s.results:
            continue
        eps = episodes_per_step(s, suites)
        ours, l2l = median(s.results["ours"]) * eps, median(s.results["l2l"]) * eps
        c = s.check["l2l"]
        f64 = s.check.get("l2l_float64", {}).get("grad_rel_diff", float("nan"))
        dw = c["weights_max_abs_diff_nonzero_grad"]
        print(f"{label(s, args):30} {s.threads:>3} {ours:>10.2f} {l2l:>10.2f} {ours / l2l:>8.2f}x "
              f"{c['grad_rel_diff']:>9.1e} {c['loss_rel_diff']:>9.1e} {dw:>9.1e} {f64:>9.1e}")


def write_record(out: Path, args: argparse.Namespace, settings: list[Setting], suites: dict[str, Suite],
                 info: dict[str, Any], seconds: float, complete: bool) -> None:
    """The JSON results, written atomically after every setting (an interrupted run keeps its data)."""
    results = []
    for s in settings:
        if not s.results:
            continue
        eps = episodes_per_step(s, suites)
        med = {n: median(v) * eps for n, v in s.results.items()}
        results.append({
            "setting": label(s, args),
            "algo": s.algo,
            "inner_steps": s.inner_steps,
            "threads": s.threads,
            "episodes_per_step": eps,
            "steps_per_repeat": s.iters,
            "steps_per_s": s.results,
            "median_episodes_per_s": med,
            "ratio_ours_over_l2l": med["ours"] / med["l2l"],
            "check_vs_ours": s.check,
        })
    record = {
        "benchmark": "classification_speed",
        "complete": complete,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setting": {
            "model": "Conv4 (4 x conv3x3 64ch + batch norm + ReLU + maxpool 2), input 1x28x28, synthetic images",
            "protonet": {"ways": args.ways, "shots": args.shots, "queries": args.queries, "episodes_per_step": 1},
            "maml": {"ways": MAML_WAYS, "shots": 1, "queries": 1, "meta_batch": args.meta_batch,
                     "inner_lr": INNER_LR, "batch_norm": "per-task batch statistics"},
            "meta_lr": META_LR,
            "optimizer": "Adam",
            "task_pool": args.pool,
            "seed": args.seed,
        },
        "protocol": {"repeats": args.repeats, "warmup": args.warmup, "statistic": "median episodes/s",
                     "order": "interleaved, rotating per repeat"},
        "comparator": "learn2learn 0.2.0 (MAML clone/adapt loop; ProtoNet step as its examples) in "
                      + str(args.l2l_python_path),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "workers": info,
                        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
                        "allocator": allocator_record(),
                        "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()),
                        "machine": platform.machine()},
        "total_seconds": seconds,
        "results": results,
    }
    write_json(out, record)


def allocator_record() -> dict[str, str]:
    """Which glibc allocator settings each side ran with (both inherit this process's ``MALLOC_*`` environment)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    if env:
        return {"ours": f"environment {env}", "l2l": f"environment {env}"}
    tuned = f"mallopt mmap/trim thresholds {THRESHOLD} (metaedge.sdk.allocator)"
    return {"ours": tuned if tune_allocator() else "glibc defaults", "l2l": "glibc defaults"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 repeats x 1 step, 1 inner step, 1 thread")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per contender and setting")
    p.add_argument("--iters", type=int, default=None,
                   help="training steps per timed repeat (default: 3 protonet, 2 MAML 1 step, 1 MAML 5 steps)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per contender and setting")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts (e.g. 1 2)")
    p.add_argument("--algos", nargs="+", default=["protonet", "maml", "fomaml"],
                   choices=["protonet", "maml", "fomaml"])
    p.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5], help="MAML inner steps")
    p.add_argument("--ways", type=int, default=20, help="ProtoNet classes per episode")
    p.add_argument("--shots", type=int, default=5, help="ProtoNet support images per class")
    p.add_argument("--queries", type=int, default=5, help="ProtoNet query images per class")
    p.add_argument("--meta-batch", type=int, default=32, help="MAML tasks per step")
    p.add_argument("--pool", type=int, default=4, help="pre-generated steps' worth of episodes, cycled through")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--l2l-python", default=None,
                   help=f"learn2learn interpreter (default: {' or '.join(mts.DEFAULT_L2L)})")
    p.add_argument("--no-float64-check", dest="float64_check", action="store_false",
                   help="skip the float64 cross-check (one step per side in double precision, per setting)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classification_speed.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.iters, args.warmup, args.inner_steps, args.threads = 2, 1, 0, [1], [1]
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``: the worker is closed, temp files removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    args.l2l_python_path = find_l2l_python(args.l2l_python)
    if args.l2l_python_path is None:
        print(f"learn2learn venv not found at {args.l2l_python or ' or '.join(mts.DEFAULT_L2L)}; build it with "
              "L2L_ROOT=$PWD/.l2l-venv bash ../shared/tools/setup_learn2learn_venv.sh", file=sys.stderr)
        return 2
    settings = []
    for threads in args.threads:
        for algo in args.algos:
            for steps in [0] if algo == "protonet" else args.inner_steps:
                default = DEFAULT_ITERS.get((suite_kind(algo), steps), 1)
                settings.append(Setting(algo, steps, threads, args.iters or default))
    out = Path(args.out)

    with tempfile.TemporaryDirectory(prefix="classification_speed_") as tmp:
        kinds = sorted({suite_kind(s.algo) for s in settings}, reverse=True)
        suites = {k: make_suite(k, args, Path(tmp)) for k in kinds}
        contenders = [Ours(suites), L2L(str(args.l2l_python_path), suites, Path(tmp) / "l2l.log")]
        print(f"few-shot classification training, Conv4 1x28x28; {args.repeats} interleaved repeats "
              f"(+{args.warmup} warm-up step); ours vs learn2learn ({args.l2l_python_path})", flush=True)
        t_start = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            for s in settings:
                t0 = time.perf_counter()
                f64 = cross_check(s, contenders, "float64") if args.float64_check else None
                bench_setting(s, contenders, args.repeats, args.warmup)
                # bench_setting keeps the max-abs ``compare`` of its float32 check; add relative and loss figures
                s.check = {"l2l": check_record(contenders[0].last_check, contenders[1].last_check)}
                if f64 is not None:
                    s.check["l2l_float64"] = f64
                info = {"l2l": contenders[1].info}
                eps = episodes_per_step(s, suites)
                c = s.check["l2l"]
                print(f"  {label(s, args)} threads={s.threads}: "
                      + ", ".join(f"{n} {median(v) * eps:.2f} ep/s" for n, v in s.results.items())
                      + f" [max|dgrad| {c['grad_max_abs_diff']:.1e} (rel {c['grad_rel_diff']:.1e}), loss "
                      f"{c['loss_ours']:.6f} vs {c['loss_other']:.6f} (rel {c['loss_rel_diff']:.1e}), "
                      f"max|dw| {c['weights_max_abs_diff']:.1e} ({c['weights_max_abs_diff_nonzero_grad']:.1e} without "
                      "zero-gradient conv biases)"
                      + (f"; float64: grad rel {f64['grad_rel_diff']:.1e}" if f64 else "")
                      + f"] ({time.perf_counter() - t0:.0f}s)", flush=True)
                write_record(out, args, settings, suites, info, time.perf_counter() - t_start, s is settings[-1])
        finally:
            for c in contenders:
                c.close()

    print()
    print_table(settings, suites, args)
    print("grad rel: max |meta-gradient difference| / max |meta-gradient| (float32); loss rel: loss difference;")
    print("max|dw|*: weights after one Adam step, leaving out the conv biases (zero gradient before batch norm);")
    print("f64 rel: grad rel of the same step in float64 on both sides")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
