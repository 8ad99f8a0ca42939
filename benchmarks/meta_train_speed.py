"""Meta-training speed: metaedge's vmapped MAML vs learn2learn 0.2.0 vs a per-task-loop PyTorch reference.

What it measures: meta-training iterations per second (one iteration = meta-gradient over a meta-batch of
25 tasks + one Adam step) on the MAML sinusoid benchmark: MLP 1-40-40-1 ReLU, K=10 support + 10 query,
inner lr 0.01, Adam 1e-3, with 1 and 5 inner steps, second order (``maml``) and first order (``fomaml``).

Contenders, all on the same pre-generated task pool and from the same initial weights:

* ``ours``: the meta-step of ``metaedge.sdk.train`` with its default flags (``meta_gradient_for``: the
  hand-derived batched MLP passes of ``sdk/learners/mlp_fast.py``; ``meta_optimizer``: fused Adam), in this
  interpreter; ``--path eager`` / ``--path compile`` time the autograd path (vmap) / its torch.compile instead, and
  ``--eager-column`` adds the eager autograd path as a second in-process contender ``eager``;
* ``l2l``: ``learn2learn.algorithms.MAML(model, lr=0.01, first_order=...)`` with the per-task loop of
  learn2learn's examples (``clone``, ``adapt``, ``query_loss.backward()``, then ``opt.step()``), in a
  subprocess of the learn2learn venv (``--l2l-python``) running ``benchmarks/_l2l_maml_worker.py``;
* ``ref``: the same per-task loop in plain PyTorch (``torch.autograd.grad(create_graph=not first_order)``),
  in a subprocess of this interpreter. When the learn2learn venv is missing it is the comparator.

Contenders run one at a time and interleaved (rotating order per repeat); warm-up iterations are
excluded; the reported figure is the median over repeats of iterations/second. Before timing, each
setting checks that all contenders give the same meta-gradient and the same weights after one
iteration (max abs difference printed). Results go to ``benchmarks/results/meta_train_speed.json``.

Whole ``metaedge train`` runs against learn2learn: ``benchmarks/meta_train_run.py``; iterations/s against
meta-batch and inner steps: ``benchmarks/meta_train_scaling.py`` (both reuse this file's contenders).

Run (from the repository root)::

    .venv/bin/python benchmarks/meta_train_speed.py                 # full: 5 repeats x 200 iterations
    .venv/bin/python benchmarks/meta_train_speed.py --quick         # smoke test
    .venv/bin/python benchmarks/meta_train_speed.py --threads 1 2 --l2l-python .l2l-venv/bin/python

The learn2learn venv is built by ``L2L_ROOT=$PWD/.l2l-venv bash ../shared/tools/setup_learn2learn_venv.sh``
(which puts the interpreter at ``.l2l-venv/venv/bin/python``; both that and ``.l2l-venv/bin/python`` are
looked for by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _protocol import MARK, write_json

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.learners import make_learner
from metaedge.sdk.models import build_model
from metaedge.sdk.tasks import make_family
from metaedge.sdk.train import meta_gradient_for, meta_optimizer

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_l2l_maml_worker.py"
DEFAULT_L2L = (".l2l-venv/bin/python", ".l2l-venv/venv/bin/python")
HIDDEN = 40
MODEL = {"kind": "mlp", "in_dim": 1, "out_dim": 1, "hidden": [HIDDEN, HIDDEN], "activation": "relu"}
SHOTS = QUERIES = 10
META_BATCH = 25
INNER_LR = 0.01
META_LR = 1e-3


# --- data and weights ------------------------------------------------------------------------------
def make_task_pool(n_batches: int, seed: int, meta_batch: int = META_BATCH) -> dict[str, np.ndarray]:
    """``n_batches`` sinusoid meta-batches, stacked: ``xs``/``ys`` ``(B, meta_batch, 10, 1)``, same for query."""
    family = make_family("sinusoid")
    rngs = [np.random.default_rng([seed, i]) for i in range(n_batches)]
    batches = [family.sample_batch(rng, meta_batch, SHOTS, QUERIES) for rng in rngs]
    return {
        "xs": np.stack([b.x_support for b in batches]).astype(np.float32),
        "ys": np.stack([b.y_support for b in batches]).astype(np.float32),
        "xq": np.stack([b.x_query for b in batches]).astype(np.float32),
        "yq": np.stack([b.y_query for b in batches]).astype(np.float32),
    }


def initial_weights(seed: int) -> dict[str, torch.Tensor]:
    """Parameters of a freshly initialised metaedge MLP 1-40-40-1 (ordered like the worker's model)."""
    torch.manual_seed(seed)
    model = build_model(MODEL)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- ours --------------------------------------------------------------------------------------------
#: ``--path``: the trainer's ``TrainConfig.compile`` value for each way of computing the meta-gradient
PATHS: dict[str, bool | None] = {"default": None, "eager": False, "compile": True}


class Ours:
    """metaedge's meta-step, as in ``metaedge.sdk.train._train`` (minus sampling, logging, checkpoints).

    ``path``: ``default`` (the trainer's default: hand-derived MLP passes), ``eager`` (autograd, vmap over tasks)
    or ``compile`` (torch.compile of the autograd path; the warm-up iterations absorb the compile).
    """

    def __init__(self, pool: dict[str, np.ndarray], weights: dict[str, torch.Tensor], path: str = "default",
                 name: str = "ours", device: str = "cpu") -> None:
        self.name = name
        self.path = path
        self.device = torch.device(device)
        self.set_pool(pool)
        self.weights = weights
        self.it = 0
        self.step: Callable[[int], float] | None = None
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.grads: dict[str, torch.Tensor] = {}

    def set_pool(self, pool: dict[str, np.ndarray]) -> None:
        """Cycle through the meta-batches of ``pool`` from the next :meth:`setup` on."""
        self.data = tuple(torch.from_numpy(pool[k]).to(self.device) for k in ("xs", "ys", "xq", "yq"))
        self.pool = int(pool["xs"].shape[0])
        self.meta_batch = int(pool["xs"].shape[1])

    def setup(self, algo: str, inner_steps: int, threads: int) -> None:
        torch.set_num_threads(threads)
        model = build_model(MODEL)
        learner = make_learner(algo, model, loss="mse", inner_lr=INNER_LR, inner_steps=inner_steps)
        state = learner.init_state()
        for n, w in self.weights.items():
            state["params"][n].copy_(w)
        state = {g: {k: v.to(self.device) for k, v in d.items()} for g, d in state.items()}
        trainable = [t.requires_grad_(False) for key in learner.trainable_keys() for t in state[key].values()]
        optimizer = meta_optimizer(trainable, META_LR)
        xs_all, ys_all, xq_all, yq_all = self.data
        self.state, self.it = state, 0
        meta_gradient = meta_gradient_for(TrainConfig(compile=PATHS[self.path]), learner)
        batch = self.meta_batch

        def step(b: int) -> float:
            xs, ys, xq, yq = xs_all[b], ys_all[b], xq_all[b], yq_all[b]
            grads, losses = meta_gradient(state, xs, ys, xq, yq, denominator=batch)
            flat = [grads[key][n] for key in learner.trainable_keys() for n in state[key]]
            for p, g in zip(trainable, flat, strict=True):
                p.grad = g
            optimizer.step()
            self.grads = grads["params"]
            return losses.sum().item() / batch

        self.step = step

    def check(self) -> dict[str, np.ndarray]:
        assert self.step is not None
        self.step(0)
        names = list(self.weights)
        out = {f"g{i}": self.grads[n].cpu().numpy().copy() for i, n in enumerate(names)}
        out.update({f"w{i}": self.state["params"][n].cpu().numpy().copy() for i, n in enumerate(names)})
        return out

    def run(self, iters: int) -> float:
        assert self.step is not None
        t0 = time.perf_counter()
        for _ in range(iters):
            self.step(self.it % self.pool)
            self.it += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def close(self) -> None:
        pass


# --- subprocess contenders -----------------------------------------------------------------------
class WorkerContender:
    """A per-task-loop contender (``l2l`` or ``ref``) living in a subprocess running the worker script."""

    def __init__(self, name: str, impl: str, python: str, files: dict[str, str], loop: str, log: Path,
                 worker: Path = WORKER, device: str = "cpu") -> None:
        self.name, self.impl, self.files, self.loop, self.device = name, impl, files, loop, device
        self.log = log
        self._log_file = open(log, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [python, str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=env,
        )
        self.info: dict[str, Any] = {}

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._log_file.flush()
                raise RuntimeError(f"{self.name} worker exited; its stderr:\n{self.log.read_text()[-3000:]}")
            if line.startswith(MARK):
                reply = json.loads(line[len(MARK) :])
                if not reply.get("ok"):
                    raise RuntimeError(f"{self.name} worker failed on {msg['cmd']}: {reply.get('error')}")
                return reply

    def setup(self, algo: str, inner_steps: int, threads: int) -> None:
        self.info = self._call(
            {
                "cmd": "setup",
                "impl": self.impl,
                "first_order": algo == "fomaml",
                "inner_steps": inner_steps,
                "inner_lr": INNER_LR,
                "meta_lr": META_LR,
                "threads": threads,
                "data": self.files["data"],
                "weights": self.files["weights"],
                "loop": self.loop,
                "device": self.device,
            }
        )

    def check(self) -> dict[str, np.ndarray]:
        out = str(Path(self.files["dir"]) / f"check_{self.name}.npz")
        self._call({"cmd": "check", "out": out})
        with np.load(out) as data:
            return {k: data[k] for k in data.files}

    def run(self, iters: int) -> float:
        return float(self._call({"cmd": "run", "iters": iters})["seconds"])

    def close(self) -> None:
        try:
            self._call({"cmd": "quit"})
        except RuntimeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_file.close()


Contender = Ours | WorkerContender


# --- the benchmark -------------------------------------------------------------------------------
@dataclass
class Setting:
    algo: str
    inner_steps: int
    threads: int
    iters: int
    results: dict[str, list[float]] = field(default_factory=dict)
    check: dict[str, dict[str, float]] = field(default_factory=dict)


def find_l2l_python(option: str | None) -> Path | None:
    """The learn2learn interpreter: ``--l2l-python`` if given, else the first of :data:`DEFAULT_L2L`."""
    candidates = [option] if option else list(DEFAULT_L2L)
    for c in candidates:
        path = Path(c)
        path = path if path.is_absolute() else ROOT / path
        if path.exists():
            return path
    return None


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs difference of the meta-gradients (``g*``) and of the weights after one iteration (``w*``)."""
    grad = max(float(np.abs(reference[k] - other[k]).max()) for k in reference if k.startswith("g"))
    weight = max(float(np.abs(reference[k] - other[k]).max()) for k in reference if k.startswith("w"))
    scale = max(float(np.abs(reference[k]).max()) for k in reference if k.startswith("g"))
    return {"grad_max_abs_diff": grad, "weights_max_abs_diff": weight, "grad_max_abs": scale}


def bench_setting(setting: Setting, contenders: list[Contender], repeats: int, warmup: int) -> None:
    """Correctness check, warm-up, then ``repeats`` interleaved timed runs of ``setting.iters`` each."""
    checks: dict[str, dict[str, np.ndarray]] = {}
    for c in contenders:
        c.setup(setting.algo, setting.inner_steps, setting.threads)
        checks[c.name] = c.check()
    for c in contenders[1:]:
        setting.check[c.name] = compare(checks[contenders[0].name], checks[c.name])
    for c in contenders:  # fresh state for timing, then warm-up (excluded)
        c.setup(setting.algo, setting.inner_steps, setting.threads)
        c.run(warmup)
    setting.results = {c.name: [] for c in contenders}
    for r in range(repeats):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for c in order:
            seconds = c.run(setting.iters)
            setting.results[c.name].append(setting.iters / seconds)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_table(settings: list[Setting], names: list[str], comparator: str) -> None:
    head = f"{'algo':7} {'steps':>5} {'thr':>3} " + " ".join(f"{n + ' it/s':>10}" for n in names)
    ratios = [n for n in names if n != "ours"]
    head += " " + " ".join(f"{'ours/' + n:>9}" for n in ratios) + f" {'max|dg|':>9} {'max|dw|':>9}"
    print(head)
    print("-" * len(head))
    for s in settings:
        med = {n: median(s.results[n]) for n in names}
        row = f"{s.algo:7} {s.inner_steps:>5} {s.threads:>3} " + " ".join(f"{med[n]:>10.1f}" for n in names)
        row += " " + " ".join(f"{med['ours'] / med[n]:>8.2f}x" for n in ratios)
        dg = max((c["grad_max_abs_diff"] for c in s.check.values()), default=float("nan"))
        dw = max((c["weights_max_abs_diff"] for c in s.check.values()), default=float("nan"))
        row += f" {dg:>9.1e} {dw:>9.1e}"
        print(row)
    print(f"comparator for the headline ratio: {comparator}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 repeats x 10 iterations, 1 thread")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per contender and setting")
    p.add_argument("--iters", type=int, default=200, help="meta-iterations per timed repeat")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up iterations per contender/setting")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts (e.g. 1 2)")
    p.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    p.add_argument("--algos", nargs="+", default=["maml", "fomaml"], choices=["maml", "fomaml"])
    p.add_argument("--pool", type=int, default=16, help="pre-generated meta-batches, cycled through")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--l2l-python", default=None, help=f"learn2learn interpreter (default: {' or '.join(DEFAULT_L2L)})")
    p.add_argument(
        "--l2l-loop",
        default="per-task",
        choices=["per-task", "summed"],
        help="learn2learn loop: backward per task (examples/vision/maml_*.py) or one backward of the summed\n"
        "query losses (examples/maml_sine.py)",
    )
    p.add_argument("--no-ref", action="store_true", help="skip the plain-PyTorch reference column")
    p.add_argument("--path", default="default", choices=list(PATHS),
                   help="how ours computes the meta-gradient: the trainer's default, eager autograd, torch.compile")
    p.add_argument("--compile", action="store_true", help="shorthand for --path compile")
    p.add_argument("--eager-column", action="store_true", help="also time the eager autograd path ('eager')")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "meta_train_speed.json"))
    p.add_argument("--device", default="cpu", help="torch device of every contender (cuda: benchmarks/gpu.sh)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.iters, args.warmup = 2, 10, 3
    if args.compile:
        args.path = "compile"
    return args


def write_record(
    out: Path,
    args: argparse.Namespace,
    settings: list[Setting],
    comparator: str,
    headline: str,
    info: dict[str, Any],
    seconds: float,
    complete: bool,
) -> None:
    """Write the JSON results (atomically); called after every setting, so an interrupted run keeps its data."""
    done = [s for s in settings if s.results]
    record = {
        "benchmark": "meta_train_speed",
        "complete": complete,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setting": {
            "family": "sinusoid",
            "model": f"MLP 1-{HIDDEN}-{HIDDEN}-1 relu",
            "shots": SHOTS,
            "queries": QUERIES,
            "meta_batch": META_BATCH,
            "inner_lr": INNER_LR,
            "meta_lr": META_LR,
            "task_pool": args.pool,
            "ours_path": args.path,
            "seed": args.seed,
            "device": args.device,
        },
        "protocol": {
            "repeats": args.repeats,
            "iters": args.iters,
            "warmup": args.warmup,
            "statistic": "median it/s",
            "order": "interleaved, rotating per repeat",
        },
        "comparator": comparator,
        "headline": headline,
        "l2l_loop": args.l2l_loop if headline == "l2l" else None,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "workers": info,
            "cpu_count": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
            "machine": platform.machine(),
        },
        "total_seconds": seconds,
        "results": [
            {
                "algo": s.algo,
                "inner_steps": s.inner_steps,
                "threads": s.threads,
                "iters_per_repeat": s.iters,
                "its_per_s": s.results,
                "median_its_per_s": {n: median(v) for n, v in s.results.items()},
                "ratio_ours_over": {
                    n: median(s.results["ours"]) / median(v) for n, v in s.results.items() if n != "ours"
                },
                "check_vs_ours": s.check,
            }
            for s in done
        ],
    }
    write_json(out, record)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``: workers are closed, temp files removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    l2l_python = find_l2l_python(args.l2l_python)
    pool = make_task_pool(args.pool, args.seed)
    weights = initial_weights(args.seed)
    out = Path(args.out)

    with tempfile.TemporaryDirectory(prefix="meta_train_speed_") as tmp:
        files = {"dir": tmp, "data": str(Path(tmp) / "tasks.npz"), "weights": str(Path(tmp) / "init.npz")}
        np.savez(files["data"], **pool)
        np.savez(files["weights"], **{f"w{i}": w.numpy() for i, w in enumerate(weights.values())})

        contenders: list[Contender] = [Ours(pool, weights, path=args.path, device=args.device)]
        if args.eager_column:
            contenders.append(Ours(pool, weights, path="eager", name="eager", device=args.device))
        if l2l_python is not None:
            l2l = WorkerContender("l2l", "l2l", str(l2l_python), files, args.l2l_loop, Path(tmp) / "l2l.log",
                                  device=args.device)
            contenders.append(l2l)
            comparator = f"learn2learn (MAML, {args.l2l_loop} loop) via {l2l_python}"
        else:
            wanted = args.l2l_python or " or ".join(DEFAULT_L2L)
            comparator = (
                f"per-task-loop PyTorch reference 'ref' (learn2learn venv NOT found at {wanted}; "
                "build it with L2L_ROOT=$PWD/.l2l-venv bash ../shared/tools/setup_learn2learn_venv.sh)"
            )
            print(f"WARNING: {comparator}", file=sys.stderr)
        if l2l_python is None or not args.no_ref:
            ref = WorkerContender("ref", "ref", sys.executable, files, "per-task", Path(tmp) / "ref.log",
                                  device=args.device)
            contenders.append(ref)
        names = [c.name for c in contenders]
        headline = "l2l" if l2l_python is not None else "ref"

        settings = [
            Setting(algo, steps, threads, args.iters)
            for threads in args.threads
            for steps in args.inner_steps
            for algo in args.algos
        ]
        print(
            f"MAML sinusoid, MLP 1-{HIDDEN}-{HIDDEN}-1, K={SHOTS}+{QUERIES}, meta-batch {META_BATCH}; "
            f"{args.repeats} repeats x {args.iters} iterations (+{args.warmup} warm-up); "
            f"contenders: {', '.join(names)}",
            flush=True,
        )
        t_start = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            for s in settings:
                t0 = time.perf_counter()
                bench_setting(s, contenders, args.repeats, args.warmup)
                info = {c.name: c.info for c in contenders if isinstance(c, WorkerContender)}
                med = {n: median(v) for n, v in s.results.items()}
                checks = "; ".join(
                    f"{n}: max|dgrad| {c['grad_max_abs_diff']:.1e} max|dw| {c['weights_max_abs_diff']:.1e}"
                    for n, c in s.check.items()
                )
                print(
                    f"  {s.algo} steps={s.inner_steps} threads={s.threads}: "
                    + ", ".join(f"{n} {v:.1f} it/s" for n, v in med.items())
                    + f" [{checks}] ({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
                complete = s is settings[-1]
                write_record(out, args, settings, comparator, headline, info, time.perf_counter() - t_start, complete)
        finally:
            for c in contenders:
                c.close()

    print()
    print_table(settings, names, comparator)
    worst = max((c["grad_max_abs_diff"] for s in settings for c in s.check.values()), default=0.0)
    print(f"correctness: max |meta-gradient difference| over all settings and contenders = {worst:.2e}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
