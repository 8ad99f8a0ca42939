"""How device adaptation cost grows: adapt + predict latency against the support-set size and the model width, for
the C library alone, the ``native`` backend and ONNX Runtime; bundle size and C arena against model size.

Run (from the repository root; about 2 minutes on 2 busy cores)::

    .venv/bin/python benchmarks/scaling_device.py            # full: 5 repeats per point
    .venv/bin/python benchmarks/scaling_device.py --quick    # smoke test: 2 repeats, fewer points

Models: sinusoid MAML MLPs ``1-h-h-1`` (ReLU), every parameter adapted, 5 SGD steps, trained for a few
meta-iterations only (with the guard off, which the sweeps use so that every contender takes all 5 steps, the
latency does not depend on the weights' values), exported with ``--inner-steps 5 --format all``.

* support sweep: ``h = 40`` (the ``runtime_latency.py`` model), ``k = 1, 2, 4, ..., 1024`` support shots;
* width sweep: ``k = 10``, ``h = 16, 32, 40, 64, 128, 256, 512``;
* ridge sweep: the same widths and ``k = 10`` for ``ridge`` (a Gauss-Newton head on MLP features: ``P = h + 1``
  adapted parameters, its one default step a damped ``P x P`` solve in float64), to show the solve's cubic term;
* every point: adapt on ``k`` shots (5 steps, unguarded) then predict 100 query points. Contenders:
  ``C`` (``me_bench --model model.mebin --shots k --no-guard``: reset + adapt + predict with no Python, its own
  fixed task), ``native`` (``Model.load(backend="native").adapt_predict``: the C library through ctypes) and
  ``onnxruntime`` (``Model.load(backend="onnxruntime").adapt_predict``: one run of ``adapt_predict.onnx``), one
  thread everywhere. The Python contenders run in a torch-free subprocess; contenders alternate within every
  repeat (rotating order), each repeat times enough calls for ~20 ms, and a point's figure is the median over
  repeats of the per-repeat medians.
* sizes: per width, the bundle's bytes by file kind (ONNX graphs, ``model.mebin``, ``theta0``/``rates``), the
  parameter count, and the C library's arena bytes (``me_arena_bytes``) for 10 and 1024 shots.

Also reported: the C rows' achieved GFLOP/s (``me_bench``'s count of dense forward/backward FLOPs).
Results: ``benchmarks/results/scaling_device.json``; plots ``docs/scaling_device.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
OUT = ROOT / "benchmarks" / "results" / "scaling_device.json"
PLOT = ROOT / "docs" / "scaling_device.png"
ME_BENCH = ROOT / "build" / "host-release" / "runtime" / "c" / "me_bench"
STEPS, QUERIES, BASE_WIDTH, BASE_SHOTS = 5, 100, 40, 10
SHOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WIDTHS = (16, 32, 40, 64, 128, 256, 512)
TARGET_S = 0.02  # timed seconds per contender per repeat


def tasks(n: int, shots: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` sinusoid tasks ``A sin(x - phi)`` (A in [0.1, 5], phi in [0, pi], x in [-5, 5]): ``xs``/``ys``
    ``(n, shots, 1)``, ``xq`` ``(n, QUERIES, 1)`` float32."""
    xs, ys, xq = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, shots, i])
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
        x = rng.uniform(-5.0, 5.0, size=(shots + QUERIES, 1))
        xs.append(x[:shots])
        ys.append(amp * np.sin(x[:shots] - phase))
        xq.append(x[shots:])
    return {k: np.stack(v).astype(np.float32) for k, v in (("xs", xs), ("ys", ys), ("xq", xq))}


# --- bundles (this process: torch) ------------------------------------------------------------------------------
def build_bundles(widths: tuple[int, ...], work: Path, algo: str = "maml") -> dict[int, Path]:
    """One exported bundle of ``algo`` per width (``work/<algo><h>.meb``), trained for 20 meta-iterations."""
    import torch

    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    torch.set_num_threads(1)
    out = {}
    for h in widths:
        t0 = time.perf_counter()
        run = train(TrainConfig(family="sinusoid", algo=algo, shots=10, queries=10, meta_batch=4, iterations=20,
                                hidden=[h, h], inner_steps=1, inner_lr=0.01), work / f"run-{algo}{h}", progress=False)
        # no predictive-interval fit for ridge: its meta-validation Jacobians take minutes at h >= 128
        out[h] = export_bundle(run, work / f"{algo}{h}.meb", formats="all", check=False,
                               inner_steps=STEPS if algo == "maml" else None, intervals=algo == "maml")
        print(f"  {algo} width {h}: trained + exported in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def sizes(bundle: Path) -> dict[str, Any]:
    """Bytes of the bundle's files by kind, its parameter count and the C arena for 10 and 1024 shots."""
    from metaedge.runtime.bundle import Bundle
    from metaedge.runtime.native import NativeModel

    files = {p.name: p.stat().st_size for p in bundle.iterdir() if p.is_file()}
    manifest = Bundle.open(bundle).manifest
    native = NativeModel((bundle / "model.mebin").read_bytes(), max_shots=BASE_SHOTS)
    return {
        "parameters": manifest.adaptation.size,
        "bundle_bytes": sum(files.values()),
        "onnx_bytes": sum(v for k, v in files.items() if k.endswith(".onnx")),
        "mebin_bytes": files["model.mebin"],
        "model_data_h_bytes": files.get("model_data.h", 0),
        "arrays_bytes": files["theta0.npy"] + files["rates.npy"],
        "files": files,
        "arena_bytes": {str(k): native.arena_bytes(k) for k in (1, BASE_SHOTS, 64, 1024)},
    }


# --- the torch-free worker ---------------------------------------------------------------------------------------
def _caller(model: Any, data: dict[str, np.ndarray], steps: int) -> Any:
    """``call(i)``: adapt + predict on task ``i`` of ``data``, returning ``(adapted, predictions)``."""

    def call(i: int) -> Any:
        return model.adapt_predict(data["xs"][i], data["ys"][i], data["xq"][i], steps=steps)

    return call


def worker(spec_path: str) -> None:
    """Time the Python contenders and ``me_bench`` on every point of the spec; write the figures as JSON."""
    from metaedge.runtime.model import Model

    spec = json.loads(Path(spec_path).read_text())
    repeats, pool = int(spec["repeats"]), 4
    results = []
    for point in spec["points"]:
        bundle, k, steps = point["bundle"], int(point["shots"]), int(point["steps"])
        data = tasks(pool, k, 0)
        models = {b: Model.load(bundle, backend=b, guard=False) for b in ("native", "onnxruntime")}
        calls = {b: _caller(m, data, steps) for b, m in models.items()}
        agree = float(np.abs(calls["native"](0)[1] - calls["onnxruntime"](0)[1]).max())
        per_call = {}
        for name, fn in calls.items():  # warm-up, and how many calls make ~TARGET_S
            t0 = time.perf_counter()
            for i in range(3):
                fn(i % pool)
            per_call[name] = (time.perf_counter() - t0) / 3
        c_per_call = per_call["native"]
        medians: dict[str, list[float]] = {"C": [], "native": [], "onnxruntime": []}
        gflops = []
        for r in range(repeats):
            order = ["C", "native", "onnxruntime"]
            order = order[r % 3:] + order[: r % 3]
            for name in order:
                if name == "C":
                    n = int(min(20000, max(5, TARGET_S / max(c_per_call, 1e-6))))
                    out = subprocess.run([spec["me_bench"], "--model", str(Path(bundle) / "model.mebin"), "--shots",
                                          str(k), "--steps", str(steps), "--repeats", str(n), "--no-guard"],
                                         capture_output=True, text=True, check=True).stdout
                    medians["C"].append(float(re.search(r"median ([0-9.]+) us", out).group(1)) / 1e3)
                    gflops.append(float(re.search(r"-> ([0-9.]+) GFLOP/s", out).group(1)))
                    continue
                fn, n = calls[name], int(min(2000, max(3, TARGET_S / per_call[name])))
                ms = []
                for j in range(n):
                    t0 = time.perf_counter()
                    fn(j % pool)
                    ms.append((time.perf_counter() - t0) * 1e3)
                medians[name].append(statistics.median(ms))
        row = {"width": point["width"], "shots": k, "steps": steps, "algo": point["algo"],
               "agreement_native_vs_ort": agree,
               "C_gflops": statistics.median(gflops),
               **{f"{n}_ms": statistics.median(v) for n, v in medians.items()},
               "repeat_medians_ms": medians}
        print(f"  {point['algo']} h={point['width']:4d} k={k:5d}: C {row['C_ms']:.4f} ms, native "
              f"{row['native_ms']:.4f} ms, onnxruntime {row['onnxruntime_ms']:.4f} ms (C {row['C_gflops']:.1f} "
              "GFLOP/s)", flush=True)
        results.append(row)
    if "torch" in sys.modules:
        raise RuntimeError("the timing worker imported torch")
    Path(spec["out"]).write_text(json.dumps(results))


# --- plots ---------------------------------------------------------------------------------------------------------
def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
    styles = {"C": ("C library alone (me_bench)", "o-"), "native": ("native backend (ctypes)", "s-"),
              "onnxruntime": ("ONNX Runtime backend", "^-")}
    for key, ax, xlabel in (("support", axes[0], "MAML, support shots k (h = 40)"),
                            ("width", axes[1], "MAML, hidden width h (k = 10)"),
                            ("ridge", axes[3], "ridge, hidden width h = head size - 1 (k = 10)")):
        rows = record[key]
        x = [r["shots"] if key == "support" else r["width"] for r in rows]
        for name, (label, style) in styles.items():
            ax.plot(x, [r[f"{name}_ms"] for r in rows], style, label=label, ms=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms per adapt (5 steps) + predict 100" if key != "ridge" else
                      "ms per adapt (1 Gauss-Newton step) + predict 100")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    s = record["sizes"]
    params = [s[str(h)]["parameters"] for h in record["widths"]]
    for label, key, style in (("bundle (all files)", "bundle_bytes", "o-"), ("ONNX graphs", "onnx_bytes", "^-"),
                              ("model.mebin", "mebin_bytes", "s-")):
        ax.plot(params, [s[str(h)][key] for h in record["widths"]], style, label=label, ms=4)
    for shots, style in (("10", "d--"), ("1024", "x--")):
        ax.plot(params, [s[str(h)]["arena_bytes"][shots] for h in record["widths"]], style,
                label=f"C arena, {shots} shots", ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("adapted parameters P (h = 16 ... 512)")
    ax.set_ylabel("bytes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("metaedge on-device cost: 1 thread, medians over interleaved repeats")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- driver ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 2 repeats, shots up to 64, widths up to 64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--plot", default=str(PLOT))
    p.add_argument("--me-bench", default=str(ME_BENCH), help="me_bench of the host-release build")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if not Path(args.me_bench).is_file():
        print(f"ERROR: {args.me_bench} not found; build it with cmake --preset host-release && cmake --build "
              "--preset host-release", file=sys.stderr)
        return 2
    shots = SHOTS if not args.quick else SHOTS[:7]
    widths = WIDTHS if not args.quick else WIDTHS[:4]
    repeats = 2 if args.quick else args.repeats
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scaling_device_") as tmp_name:
        tmp = Path(tmp_name)
        print("bundles:", flush=True)
        bundles = build_bundles(widths, tmp)
        size_rows = {str(h): sizes(b) for h, b in bundles.items()}
        ridge = build_bundles(widths, tmp, "ridge")
        size_rows = {**size_rows, **{f"ridge{h}": sizes(b) for h, b in ridge.items()}}
        points = [{"bundle": str(bundles[BASE_WIDTH]), "width": BASE_WIDTH, "shots": k, "steps": STEPS,
                   "algo": "maml"} for k in shots]
        points += [{"bundle": str(bundles[h]), "width": h, "shots": BASE_SHOTS, "steps": STEPS, "algo": "maml"}
                   for h in widths]
        points += [{"bundle": str(ridge[h]), "width": h, "shots": BASE_SHOTS, "steps": 1, "algo": "ridge"}
                   for h in widths]
        spec = {"points": points, "repeats": repeats, "me_bench": args.me_bench, "out": str(tmp / "times.json")}
        (tmp / "spec.json").write_text(json.dumps(spec))
        print("timing (torch-free worker):", flush=True)
        subprocess.run([sys.executable, str(HERE), "--worker", str(tmp / "spec.json")], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows = json.loads((tmp / "times.json").read_text())
    n_support = len(shots)
    record = {
        "benchmark": "scaling_device",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setting": {"model": "MLP 1-h-h-1 relu, MAML, all parameters adapted", "steps": STEPS, "guard": False,
                    "queries": QUERIES, "threads": 1, "support_width": BASE_WIDTH, "width_shots": BASE_SHOTS},
        "protocol": {"repeats": repeats, "statistic": "median over repeats of per-repeat medians (ms per call)",
                     "order": "contenders interleaved within each repeat, rotating", "target_s_per_repeat": TARGET_S},
        "shots": list(shots), "widths": list(widths),
        "support": rows[:n_support], "width": rows[n_support:n_support + len(widths)],
        "ridge": rows[n_support + len(widths):], "sizes": size_rows,
        "environment": {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
                        "loadavg": list(os.getloadavg()), "machine": platform.machine()},
        "total_seconds": time.perf_counter() - t_start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    plot(record, Path(args.plot))
    print(f"\n{'sweep':8} {'h':>5} {'k':>5} {'C ms':>9} {'native ms':>10} {'ORT ms':>9} {'ORT/C':>7} {'C GFLOP/s':>10}")
    for key in ("support", "width", "ridge"):
        for r in record[key]:
            print(f"{key:8} {r['width']:>5} {r['shots']:>5} {r['C_ms']:>9.4f} {r['native_ms']:>10.4f} "
                  f"{r['onnxruntime_ms']:>9.4f} {r['onnxruntime_ms'] / r['C_ms']:>7.1f} {r['C_gflops']:>10.1f}")
    print(f"\n{'h':>5} {'P':>8} {'bundle B':>10} {'onnx B':>10} {'mebin B':>9} {'arena@10':>9} {'arena@1024':>11}")
    for h in widths:
        s = size_rows[str(h)]
        print(f"{h:>5} {s['parameters']:>8} {s['bundle_bytes']:>10} {s['onnx_bytes']:>10} {s['mebin_bytes']:>9} "
              f"{s['arena_bytes']['10']:>9} {s['arena_bytes']['1024']:>11}")
    print(f"wrote {args.out} and {args.plot} in {record['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
