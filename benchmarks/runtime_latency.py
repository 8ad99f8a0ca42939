"""Adaptation latency on one task: the metaedge runtime (ONNX Runtime) vs learn2learn vs eager torch.func.

Run (from the repository root)::

    .venv/bin/python benchmarks/runtime_latency.py                          # full: 7 repeats x 200 calls
    .venv/bin/python benchmarks/runtime_latency.py --quick                  # smoke test: 2 repeats x 20 calls
    .venv/bin/python benchmarks/runtime_latency.py --bundle /tmp/sin.meb    # reuse an exported bundle

What it measures: milliseconds per *adapt + predict* call on the MAML sinusoid model (MLP 1-40-40-1 ReLU,
the trained run ``runs/bench-sinusoid/maml``): 10 support shots, 5 SGD steps at the run's inner rate (0.01),
then predictions for 100 query points; one thread everywhere. Contenders, all from the same weights and on
the same pool of tasks (call ``i`` uses task ``i mod pool``):

* ``rt-guard``: ``metaedge.runtime.model.Model.load(bundle, backend="onnxruntime")``,
  ``model.adapt_predict(xs, ys, xq, steps=5)``: one run of ``adapt_predict.onnx`` (the 5 steps unrolled, their
  support losses for the guard, and the forward pass on the queries; constants bound once through I/O binding);
* ``rt-noguard``: the same with ``guard=False``;
* ``rt-guard-2call``: the same model through ``model.adapt(xs, ys, steps=5).predict(xq)``: the unrolled
  ``adapt_steps.onnx`` (whose support losses serve the guard: a step that raised the loss is rolled back), then
  ``forward.onnx``, two graph runs;
* ``rt-guard@base`` / ``rt-noguard@base`` / ``native-guard@base`` (with ``--baseline-python``, e.g. the
  interpreter of a checkout of the previous release): that checkout's ``metaedge export`` and runtime,
  ``adapt(...).predict(...)``, in the same run, so the table shows before and after side by side;
* ``native-guard`` / ``native-noguard``: ``model.adapt_predict`` on the C library (``backend="native"``, what
  ``Model.load`` picks by default for a bundle with ``model.mebin``; it adapts and predicts in two library calls);
* ``l2l``: ``learn2learn.algorithms.MAML(model, lr=0.01)``: ``learner = maml.clone()``, 5 x
  ``learner.adapt(mse(learner(xs), ys))``, then ``learner(xq)`` under ``torch.no_grad()``; in a subprocess of
  the learn2learn venv (``--l2l-python``) running this file with ``--worker`` (line protocol and process
  handling from ``_protocol.serve`` and ``meta_train_speed.WorkerContender``). Its model is the
  ``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)`` of the run, weights mapped by name
  (``body.0`` -> ``0``, ``body.2`` -> ``2``, ``head`` -> ``4``) from the bundle's ``theta0.npy`` + manifest
  layout;
* ``l2l-fo``: the same with ``MAML(model, lr=0.01, first_order=True)`` (no graph kept through the inner steps;
  the cheaper way to run learn2learn when only adapting, shown for fairness);
* ``C-host-release`` / ``C-host-native``: the C library with no Python at all, ``me_bench --model
  bundle/model.mebin`` of the ``host-release`` build (and of ``host-native``, configured with
  ``-DMETAEDGE_NATIVE_ARCH=ON``, where built), one run per repeat on the benchmark's own fixed task;
* ``torch.func``: ``metaedge.sdk`` in this interpreter (``Run.load`` + ``learner.inner.adapt`` for 5 steps,
  then ``learner.inner.forward``, under ``torch.no_grad()``);
* ``torch.func-vmap``: the evaluator's batched path on one task (``learner.adapt_batch`` with ``T=1`` +
  ``learner.predict_batch``).

Inputs are numpy float32 arrays and outputs numpy arrays for every contender (the tensor conversions are
inside the timed call). Contenders run interleaved (rotating order per repeat) after a warm-up; every call
is timed on its own and the figures are the median and p90 over all timed calls (per-repeat medians are kept
in the JSON). Before timing, the predictions of all contenders are compared on every task of the pool (max
abs difference vs ``torch.func``; the guarded runtime vs the guarded ``torch.func`` trajectory).

Also measured: the fixed cost of one ONNX Runtime ``session.run`` (an Identity graph) and the cost of one run
of each bundle graph with prebuilt feeds, which splits a runtime call into graph time and Python time.

Results go to ``benchmarks/results/runtime_latency.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _protocol import serve, write_json

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
RUN = ROOT / "runs" / "bench-sinusoid" / "maml"
OUT = ROOT / "benchmarks" / "results" / "runtime_latency.json"
SHOTS = 10
STEPS = 5
PREDICT_N = 100
#: metaedge MLP parameter name -> index in learn2learn's ``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)``
L2L_NAMES = {
    "body.0.weight": "0.weight",
    "body.0.bias": "0.bias",
    "body.2.weight": "2.weight",
    "body.2.bias": "2.bias",
    "head.weight": "4.weight",
    "head.bias": "4.bias",
}


# --- shared helpers (also used by runtime_memory.py) ---------------------------------------------------
def export_bundle_cli(run: Path, out: Path, python: str = sys.executable) -> float:
    """``metaedge export RUN -o OUT --inner-steps 5`` (the benchmark's steps, unrolled into one graph; ONNX graphs
    and the C library's model.mebin) in a subprocess of ``python`` (default: this interpreter); returns the seconds
    it took."""
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-m", "metaedge.cli", "export", str(run), "-o", str(out), "--inner-steps",
                           str(STEPS), "--format", "all"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"metaedge export failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def sinusoid_tasks(n: int, seed: int, shots: int = SHOTS, queries: int = PREDICT_N) -> dict[str, np.ndarray]:
    """``n`` sinusoid tasks ``y = A sin(x - phi)`` drawn as ``metaedge.sdk.tasks.Sinusoid`` does (A in
    [0.1, 5], phi in [0, pi], x in [-5, 5]): ``xs``/``ys`` ``(n, shots, 1)``, ``xq`` ``(n, queries, 1)``."""
    xs, ys, xq = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
        x = rng.uniform(-5.0, 5.0, size=(shots + queries, 1))
        y = amp * np.sin(x - phase)
        xs.append(x[:shots])
        ys.append(y[:shots])
        xq.append(x[shots:])
    return {k: np.stack(v).astype(np.float32) for k, v in (("xs", xs), ("ys", ys), ("xq", xq))}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# --- subprocess worker: learn2learn (its venv: stdlib, numpy, torch, learn2learn) or the runtime (no torch) ---
class AdaptWorker:
    """``setup`` / ``check`` / ``run`` for ``_protocol.serve``: one adapt + predict per call.

    ``setup`` field ``impl``: ``l2l`` (``lr``, ``first_order``, ``weights``) or ``runtime`` (``bundle``,
    ``guard``, ``api``: ``fused`` for ``model.adapt_predict``, ``two-calls`` for ``adapt(...).predict(...)``); both
    take ``data``, ``steps``, ``threads``.
    """

    def __init__(self) -> None:
        self.call: Callable[[int], np.ndarray] | None = None
        self.pool = 0
        self.it = 0

    def setup(self, cfg: dict[str, Any]) -> dict[str, Any]:
        data = np.load(cfg["data"])
        xs_all, ys_all, xq_all = data["xs"], data["ys"], data["xq"]
        self.pool, self.it = int(xs_all.shape[0]), 0
        steps = int(cfg["steps"])
        if cfg["impl"] == "runtime":
            import onnxruntime as ort

            from metaedge.runtime.model import Model

            model = Model.load(cfg["bundle"], guard=bool(cfg["guard"]), backend=cfg.get("backend", "onnxruntime"))

            def call_fused(i: int) -> np.ndarray:
                return model.adapt_predict(xs_all[i], ys_all[i], xq_all[i], steps=steps)[1]

            def call_two(i: int) -> np.ndarray:
                return model.adapt(xs_all[i], ys_all[i], steps=steps).predict(xq_all[i])

            self.call = call_fused if cfg.get("api", "fused") == "fused" else call_two
            kept = [model.adapt(xs_all[i], ys_all[i], steps=steps).steps_kept for i in range(self.pool)]
            info: dict[str, Any] = {"onnxruntime": ort.__version__, "numpy": np.__version__, "steps_kept": kept,
                                    "backend": model.backend, "api": cfg.get("api", "fused"),
                                    "graphs": sorted(model.bundle.manifest.graphs.files())}
            if cfg.get("identity"):  # ONNX Runtime overheads, measured here, without torch in the process
                info["overheads"] = ort_overheads(model, cfg["identity"], xs_all[0], ys_all[0], xq_all[0],
                                                  int(cfg["overhead_repeats"]), int(cfg["overhead_calls"]))
            if "torch" in sys.modules:
                raise RuntimeError("the runtime worker imported torch")
            info["torch_imported"] = False
            return info
        return self._setup_l2l(cfg, xs_all, ys_all, xq_all, steps)

    def _setup_l2l(self, cfg: dict[str, Any], xs_all: np.ndarray, ys_all: np.ndarray, xq_all: np.ndarray,
                   steps: int) -> dict[str, Any]:
        import learn2learn as l2l
        import torch
        from torch import nn

        torch.set_num_threads(int(cfg["threads"]))
        weights = dict(np.load(cfg["weights"]))
        hidden = int(weights["0.weight"].shape[0])
        model = nn.Sequential(nn.Linear(weights["0.weight"].shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                              nn.ReLU(), nn.Linear(hidden, weights["4.weight"].shape[0]))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
        maml = l2l.algorithms.MAML(model, lr=float(cfg["lr"]), first_order=bool(cfg["first_order"]))
        lossfn = nn.MSELoss()

        def call(i: int) -> np.ndarray:
            xs, ys, xq = torch.from_numpy(xs_all[i]), torch.from_numpy(ys_all[i]), torch.from_numpy(xq_all[i])
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(lossfn(learner(xs), ys))
            with torch.no_grad():
                return learner(xq).numpy()

        self.call = call
        return {"torch": torch.__version__, "learn2learn": l2l.__version__, "threads": torch.get_num_threads(),
                "numpy": np.__version__}

    def check(self, out: str) -> dict[str, Any]:
        assert self.call is not None
        np.save(out, np.stack([self.call(i) for i in range(self.pool)]))
        return {}

    def run(self, iters: int) -> dict[str, Any]:
        assert self.call is not None
        ms = []
        for _ in range(iters):
            t0 = time.perf_counter()
            self.call(self.it % self.pool)
            ms.append((time.perf_counter() - t0) * 1e3)
            self.it += 1
        return {"seconds": sum(ms) / 1e3, "ms": ms}


class PureC:
    """The C library with no Python: ``me_bench --model bundle/model.mebin`` (``runtime/c/bench/bench.c``), one run
    per repeat; each run times ``calls`` repeats of reset + guarded adapt + predict on its own fixed task
    (1.5 sin(x - 1), 10 shots) and prints its median and p90."""

    def __init__(self, name: str, binary: Path, mebin: Path) -> None:
        self.name, self.binary, self.mebin, self.p90s, self.kept = name, binary, mebin, [], ""

    def time_calls(self, n: int) -> list[float]:
        out = subprocess.run([str(self.binary), "--model", str(self.mebin), "--repeats", str(max(n, 10)), "--shots",
                              str(SHOTS), "--steps", str(STEPS)], capture_output=True, text=True, check=True).stdout
        fields = dict(re.findall(r"(median|p90) ([0-9.]+) us", out))
        self.p90s.append(float(fields["p90"]) / 1e3)
        self.kept = re.search(r"\(([0-9]+) kept\)", out).group(1)
        return [float(fields["median"]) / 1e3]


def pure_c_contenders(bundle: Path) -> list[PureC]:
    """``me_bench`` of the host builds that exist (``cmake --preset host-release``; ``host-native`` is the same
    configured with ``-DMETAEDGE_NATIVE_ARCH=ON``)."""
    found = []
    for preset in ("host-release", "host-native"):
        binary = ROOT / "build" / preset / "runtime" / "c" / "me_bench"
        if binary.is_file() and (bundle / "model.mebin").is_file():
            found.append(PureC(f"C-{preset}", binary, bundle / "model.mebin"))
    return found


#: contenders compared with the guarded torch.func trajectory
GUARDED = {"rt-guard", "rt-guard-2call", "rt-guard@base", "native-guard", "native-guard@base"}


def worker_main(impl: str) -> None:
    serve(AdaptWorker())  # _protocol is stdlib only: the runtime worker stays torch-free


# --- contenders in this interpreter -----------------------------------------------------------------------
class InProcess:
    """A contender timed in this interpreter: ``call(i)`` adapts on task ``i`` and predicts its queries."""

    def __init__(self, name: str, call: Callable[[int], np.ndarray], pool: int) -> None:
        self.name, self.call, self.pool, self.it = name, call, pool, 0
        self.info: dict[str, Any] = {}

    def predictions(self) -> np.ndarray:
        return np.stack([np.asarray(self.call(i)) for i in range(self.pool)])

    def time_calls(self, n: int) -> list[float]:
        ms = []
        call, pool = self.call, self.pool
        for _ in range(n):
            t0 = time.perf_counter()
            call(self.it % pool)
            ms.append((time.perf_counter() - t0) * 1e3)
            self.it += 1
        return ms

    def close(self) -> None:
        pass


def torchfunc_contenders(run_path: Path, data: dict[str, np.ndarray]) -> tuple[InProcess, InProcess, Any]:
    """``torch.func`` (``inner.adapt`` + ``inner.forward``) and ``torch.func-vmap`` (``adapt_batch``, T=1)."""
    import torch

    from metaedge.sdk.run import Run

    run = Run.load(run_path)
    learner, state = run.learner, run.state
    fast, frozen = learner.split(state["params"])
    rates = state["rates"]
    xs, ys, xq = data["xs"], data["ys"], data["xq"]

    def call(i: int) -> np.ndarray:
        x, y, q = torch.from_numpy(xs[i]), torch.from_numpy(ys[i]), torch.from_numpy(xq[i])
        with torch.no_grad():
            adapted = learner.inner.adapt(fast, frozen, rates, x, y, STEPS)
            return learner.inner.forward(adapted, frozen, q).numpy()

    def call_vmap(i: int) -> np.ndarray:
        x, y, q = torch.from_numpy(xs[i : i + 1]), torch.from_numpy(ys[i : i + 1]), torch.from_numpy(xq[i : i + 1])
        traj = learner.adapt_batch(state, x, y, STEPS)
        return learner.predict_batch(state, traj[STEPS], q)[0].numpy()

    return InProcess("torch.func", call, len(xs)), InProcess("torch.func-vmap", call_vmap, len(xs)), run


def guarded_reference(run: Any, data: dict[str, np.ndarray]) -> np.ndarray:
    """Predictions after 5 guarded steps (a step that raises the support loss is rejected), in PyTorch."""
    import torch

    xs, ys, xq = (torch.from_numpy(data[k]) for k in ("xs", "ys", "xq"))
    traj = run.learner.adapt_batch(run.state, xs, ys, STEPS, guard=True)
    return run.learner.predict_batch(run.state, traj[STEPS], xq).numpy()


# --- subprocess contenders (learn2learn, runtime) ------------------------------------------------------------
def worker_contender_class() -> type:
    from meta_train_speed import WorkerContender

    class WorkerProc(WorkerContender):
        """``meta_train_speed.WorkerContender``'s line protocol, talking to this file's ``--worker`` mode."""

        def __init__(self, name: str, python: str, cfg: dict[str, Any], log: Path) -> None:
            self.name, self.cfg, self.log = name, cfg, log
            self._log_file = open(log, "w")
            self.proc = subprocess.Popen([python, str(HERE), "--worker", cfg["impl"]], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._log_file, text=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=str(HERE.parent))
            self.info = self._call({"cmd": "setup", **cfg})

        def predictions(self) -> np.ndarray:
            out = str(Path(self.cfg["dir"]) / f"pred_{self.name}.npy")
            self._call({"cmd": "check", "out": out})
            return np.load(out)

        def time_calls(self, n: int) -> list[float]:
            return [float(v) for v in self._call({"cmd": "run", "iters": n})["ms"]]

    return WorkerProc


def l2l_weights(bundle: Path) -> dict[str, np.ndarray]:
    """The bundle's ``theta0.npy`` split by the manifest layout, renamed to learn2learn's module names."""
    from metaedge.runtime.bundle import Bundle

    opened = Bundle.open(bundle)
    out = {}
    for name, value in opened.manifest.adaptation.layout.split(opened.array("theta0.npy")).items():
        if name not in L2L_NAMES:
            raise ValueError(f"parameter {name} has no learn2learn counterpart; expected {sorted(L2L_NAMES)}")
        out[L2L_NAMES[name]] = value
    if set(out) != set(L2L_NAMES.values()):
        raise ValueError(f"bundle adapts {sorted(out)}, the learn2learn model needs {sorted(L2L_NAMES.values())}")
    return out


# --- ONNX Runtime overheads ---------------------------------------------------------------------------------
def write_identity_graph(path: Path) -> Path:
    """An ONNX graph ``y = Identity(x)``: timing it gives the fixed cost of one ``session.run``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def ort_overheads(model: Any, identity: str, xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, repeats: int,
                  calls: int) -> dict[str, dict[str, float]]:
    """Per-run time (ms) of the Identity graph and of each bundle graph with prebuilt feeds (the fused graph
    through the backend's I/O binding, as the runtime runs it), and of the runtime's per-step Python work (theta
    split + concatenation, the guard's support loss). Runs in the torch-free runtime worker."""
    from metaedge.runtime.backends.onnxruntime import session

    ident = session(Path(identity))  # same session options as the runtime (1 intra-op thread)
    layout, runner = model.layout, model.runner  # the onnxruntime backend's own sessions and support loss
    theta = layout.split(model.theta0, "theta.")
    step_feed, steps_feed = ({"xs": xs, "ys": ys, **theta, **rates} for rates in (runner._step_rates,
                                                                                 runner._steps_rates))
    ops: dict[str, Callable[[], Any]] = {
        "identity_run": lambda: ident.run(None, {"x": xs}),
        "adapt_step_run_k10": lambda: runner._step.run(None, step_feed),
        "adapt_steps_unrolled_run_k10": lambda: runner._steps.run(None, steps_feed),
        "forward_run_n10": lambda: runner._forward.run(None, {"x": xs, **theta}),
        "forward_run_n100": lambda: runner._forward.run(None, {"x": xq, **theta}),
        "adapt_predict_run_k10_n100": lambda: runner._fused.run({"xs": xs, "ys": ys, "xq": xq}),
        "split_theta_and_concat": lambda: np.concatenate([v.ravel() for v in layout.split(model.theta0).values()]),
        "guard_support_loss_k10": lambda: runner._support_loss(model.theta0, xs, ys),
    }
    times: dict[str, list[float]] = {k: [] for k in ops}
    for fn in ops.values():  # warm-up
        for _ in range(20):
            fn()
    for _ in range(repeats):
        for name, fn in ops.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: {"median_ms": median(v), "p90_ms": percentile(v, 90)} for name, v in times.items()}


# --- driver -------------------------------------------------------------------------------------------------
def find_l2l(option: str | None) -> Path | None:
    from meta_train_speed import find_l2l_python

    return find_l2l_python(option)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 repeats x 20 calls, 10 warm-up calls")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats per contender")
    p.add_argument("--calls", type=int, default=200, help="timed adapt+predict calls per repeat")
    p.add_argument("--warmup", type=int, default=50, help="untimed warm-up calls per contender")
    p.add_argument("--pool", type=int, default=8, help="sinusoid tasks, cycled through")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default=str(RUN), help="trained sinusoid MAML run directory")
    p.add_argument("--bundle", default=None, help="an exported bundle of --run (default: export into a temp dir)")
    p.add_argument("--l2l-python", default=None, help="learn2learn interpreter (default: .l2l-venv/[venv/]bin/python)")
    p.add_argument("--baseline-python", default=None,
                   help="interpreter of another metaedge checkout (e.g. the previous release): adds its export and "
                        "runtime as rt-guard@base / rt-noguard@base")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--worker", choices=["l2l", "runtime"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.calls, args.warmup = 2, 20, 10
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``: workers closed, temp files removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    l2l_python = find_l2l(args.l2l_python)
    if l2l_python is None:
        print("ERROR: learn2learn venv not found; pass --l2l-python", file=sys.stderr)
        return 2
    data = sinusoid_tasks(args.pool, args.seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runtime_latency_") as tmp_name:
        tmp = Path(tmp_name)
        if args.bundle:
            bundle, export_s = Path(args.bundle), None
        else:
            bundle = tmp / "sin.meb"
            export_s = export_bundle_cli(Path(args.run), bundle)
            print(f"exported {args.run} -> {bundle} in {export_s:.1f}s", flush=True)
        from metaedge.runtime.bundle import Bundle

        manifest = Bundle.open(bundle).manifest
        norm = manifest.normalization
        if (norm.x_mean, norm.x_std, norm.y_mean, norm.y_std) != ((0.0,), (1.0,), (0.0,), (1.0,)):
            raise ValueError("this benchmark expects an unnormalised sinusoid run (identity normalization)")
        rates = np.load(bundle / "rates.npy")
        lr = float(rates[0])
        if not np.all(rates == lr):
            raise ValueError("learn2learn's MAML has one inner rate; this bundle has per-parameter rates")
        np.savez(tmp / "tasks.npz", **data)
        np.savez(tmp / "l2l_weights.npz", **l2l_weights(bundle))

        tf, tf_vmap, run = torchfunc_contenders(Path(args.run), data)
        theta_run = manifest.adaptation.layout.flatten({k: v.numpy() for k, v in run.state["params"].items()})
        theta_diff = float(np.abs(theta_run - np.load(bundle / "theta0.npy")).max())
        WorkerProc = worker_contender_class()
        contenders: list[Any] = []
        cfg = {"dir": str(tmp), "data": str(tmp / "tasks.npz"), "steps": STEPS, "threads": 1}
        rt_cfg = {**cfg, "impl": "runtime", "bundle": str(bundle)}
        l2l_cfg = {**cfg, "impl": "l2l", "weights": str(tmp / "l2l_weights.npz"), "lr": lr}
        try:
            contenders.append(WorkerProc("rt-guard", sys.executable, {**rt_cfg, "guard": True}, tmp / "rt-g.log"))
            contenders.append(WorkerProc("rt-noguard", sys.executable, {
                **rt_cfg, "guard": False, "identity": str(write_identity_graph(tmp / "identity.onnx")),
                "overhead_repeats": max(args.repeats, 2), "overhead_calls": args.calls}, tmp / "rt.log"))
            contenders.append(WorkerProc("rt-guard-2call", sys.executable, {**rt_cfg, "guard": True,
                                                                             "api": "two-calls"}, tmp / "rt-2.log"))
            if args.baseline_python:  # the other checkout's exporter and runtime, same run
                base_bundle = tmp / "base.meb"
                base_export_s = export_bundle_cli(Path(args.run), base_bundle, args.baseline_python)
                print(f"baseline export ({args.baseline_python}) in {base_export_s:.1f}s", flush=True)
                base_cfg = {**rt_cfg, "bundle": str(base_bundle), "api": "two-calls"}
                for guard in (True, False):
                    name = "rt-guard@base" if guard else "rt-noguard@base"
                    contenders.append(WorkerProc(name, args.baseline_python, {**base_cfg, "guard": guard},
                                                 tmp / f"{name}.log"))
                if manifest.has_mebin:
                    contenders.append(WorkerProc("native-guard@base", args.baseline_python,
                                                 {**base_cfg, "guard": True, "backend": "native"},
                                                 tmp / "native-base.log"))
            if manifest.has_mebin:  # the C library through the same Model API
                for guard in (True, False):
                    name = "native-guard" if guard else "native-noguard"
                    contenders.append(WorkerProc(name, sys.executable, {**rt_cfg, "guard": guard, "backend": "native"},
                                                 tmp / f"{name}.log"))
            contenders += [tf, tf_vmap]
            contenders.append(WorkerProc("l2l", str(l2l_python), {**l2l_cfg, "first_order": False}, tmp / "l2l.log"))
            contenders.append(WorkerProc("l2l-fo", str(l2l_python), {**l2l_cfg, "first_order": True},
                                         tmp / "l2l-fo.log"))
            pure_c = pure_c_contenders(bundle)
            names = [c.name for c in contenders]

            # --- agreement ------------------------------------------------------------------------------
            preds = {c.name: c.predictions() for c in contenders}
            ref = preds["torch.func"]
            ref_guard = guarded_reference(run, data)
            kept = list(contenders[0].info["steps_kept"])
            check = {n: float(np.abs(p - (ref_guard if n in GUARDED else ref)).max()) for n, p in preds.items()}
            check["torch.func guarded vs unguarded"] = float(np.abs(ref_guard - ref).max())
            print(f"weights: max |run - bundle theta0| = {theta_diff:.1e}; guarded runtime kept {kept} of {STEPS} "
                  "steps per task", flush=True)
            print("agreement (max abs diff of the 100 predictions x pool; rt-guard vs guarded torch.func, others vs "
                  "torch.func): " + ", ".join(f"{n} {v:.1e}" for n, v in check.items()), flush=True)

            # --- timing ---------------------------------------------------------------------------------
            for c in contenders:
                c.time_calls(args.warmup)
            times: dict[str, list[list[float]]] = {n: [] for n in names}
            times.update({c.name: [] for c in pure_c})
            for r in range(args.repeats):
                timed = [*contenders, *pure_c]
                order = timed[r % len(timed) :] + timed[: r % len(timed)]
                for c in order:
                    times[c.name].append(c.time_calls(args.calls if c not in pure_c else 20 * args.calls))
                line = ", ".join(f"{n} {median(times[n][-1]):.3f}" for n in names)
                print(f"  repeat {r + 1}/{args.repeats}: median ms {line}", flush=True)
            info = {c.name: {k: v for k, v in c.info.items() if k != "overheads"} for c in contenders if c.info}
            overheads = contenders[1].info["overheads"]
        finally:
            for c in contenders:
                c.close()

    for c in pure_c:  # one median per run: the table's p90 is the median of the runs' own p90s
        check[c.name] = float("nan")
    names += [c.name for c in pure_c]
    flat = {n: [v for rep in times[n] for v in rep] for n in names}
    med = {n: median(v) for n, v in flat.items()}
    p90 = {n: percentile(v, 90) for n, v in flat.items()}
    p90.update({c.name: median(c.p90s) for c in pure_c})
    rep_med = {n: [median(rep) for rep in times[n]] for n in names}
    ratio = {n: med["l2l"] / med[n] for n in names}
    ratio_fo = {n: med["l2l-fo"] / med[n] for n in names}
    # adapt_predict: one graph (steps, guard losses, forward); two calls: the unrolled steps, then the forward
    graph_ms = overheads["adapt_predict_run_k10_n100"]["median_ms"]
    graph2_ms = overheads["adapt_steps_unrolled_run_k10"]["median_ms"] + overheads["forward_run_n100"]["median_ms"]
    breakdown = {
        "rt-noguard_graph_ms": graph_ms,
        "rt-noguard_python_ms": med["rt-noguard"] - graph_ms,
        "rt-guard_python_ms": med["rt-guard"] - graph_ms,
        "rt-guard-2call_graph_ms": graph2_ms,
        "rt-guard-2call_python_ms": med["rt-guard-2call"] - graph2_ms,
        "session_runs_per_call": {"rt-noguard": 1, "rt-guard": 1, "rt-guard-2call": 2},
    }

    title = (f"adapt ({SHOTS} shots, {STEPS} steps) + predict {PREDICT_N} points, MLP 1-40-40-1, 1 thread; "
             f"{args.repeats} repeats x {args.calls} calls, interleaved")
    print()
    print(title)
    head = f"{'contender':16} {'median ms':>10} {'p90 ms':>9} {'repeat medians (min-max)':>25} " \
           f"{'l2l / this':>10} {'l2l-fo / this':>13} {'max|dpred|':>10}"
    print(head)
    print("-" * len(head))
    for n in names:
        span = f"{min(rep_med[n]):.3f}-{max(rep_med[n]):.3f}"
        print(f"{n:16} {med[n]:>10.3f} {p90[n]:>9.3f} {span:>25} {ratio[n]:>9.2f}x {ratio_fo[n]:>12.2f}x "
              f"{check[n]:>10.1e}")
    print()
    print("ONNX Runtime per session.run (prebuilt feeds, median ms): "
          + ", ".join(f"{k} {v['median_ms']:.4f}" for k, v in overheads.items()))
    print(f"ONNX Runtime call breakdown: adapt_predict.onnx ({STEPS} steps unrolled + forward(n=100)) = "
          f"{graph_ms:.3f} ms in the graph; Python/numpy {breakdown['rt-noguard_python_ms']:.3f} ms unguarded, "
          f"{breakdown['rt-guard_python_ms']:.3f} ms guarded; two calls: adapt_steps.onnx + forward.onnx = "
          f"{graph2_ms:.3f} ms in graphs, Python/numpy {breakdown['rt-guard-2call_python_ms']:.3f} ms guarded")
    default = "native-guard" if "native-guard" in ratio else "rt-guard"  # what Model.load picks for this bundle
    goal = ratio[default] >= 10
    print(f"goal runtime >= 10x faster than learn2learn: {'MET' if goal else 'NOT MET'} with the default backend "
          f"({default}: {ratio[default]:.2f}x vs MAML(lr={lr:g}), {ratio_fo[default]:.2f}x vs first-order); "
          f"ONNX Runtime backend {ratio['rt-guard']:.2f}x guarded, {ratio['rt-noguard']:.2f}x unguarded")

    record = {
        "benchmark": "runtime_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setting": {"run": str(args.run), "model": "MLP 1-40-40-1 relu", "shots": SHOTS, "steps": STEPS,
                    "predict_n": PREDICT_N, "inner_lr": lr, "task_pool": args.pool, "seed": args.seed,
                    "threads": 1, "bundle_export_seconds": export_s, "baseline_python": args.baseline_python},
        "protocol": {"repeats": args.repeats, "calls_per_repeat": args.calls, "warmup_calls": args.warmup,
                     "statistic": "median and p90 over all timed calls (ms per adapt+predict)",
                     "order": "interleaved, rotating per repeat"},
        "results": {n: {"median_ms": med[n], "p90_ms": p90[n], "repeat_median_ms": rep_med[n],
                        "speedup_vs_l2l": ratio[n], "speedup_vs_l2l_first_order": ratio_fo[n]} for n in names},
        "agreement_max_abs_diff": check,
        "agreement_reference": "torch.func (rt-guard: torch.func adapt_batch guard=True)",
        "weights_max_abs_diff_run_vs_bundle": theta_diff,
        "rt_guard_steps_kept_per_task": kept,
        "ort_session_overheads": overheads,
        "runtime_breakdown": breakdown,
        "goal": {"target": "runtime >= 10x faster than learn2learn", "met": goal, "default_backend": default},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "onnxruntime": ort.__version__, "numpy": np.__version__, "workers": info,
                        "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()),
                        "machine": platform.machine(), "processor": platform.processor()},
        "total_seconds": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
