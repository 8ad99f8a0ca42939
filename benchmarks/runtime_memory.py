"""Peak resident memory of adapting on a device: the metaedge runtime (numpy + ONNX Runtime) vs PyTorch.

Run (from the repository root)::

    .venv/bin/python benchmarks/runtime_memory.py                          # full: 3 fresh processes per contender
    .venv/bin/python benchmarks/runtime_memory.py --quick                  # smoke test: 1 process per contender
    .venv/bin/python benchmarks/runtime_memory.py --bundle /tmp/sin.meb    # reuse an exported bundle

Each measurement is a fresh Python process that does one job end to end and then prints
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (and ``VmHWM`` from ``/proc/self/status`` as a cross-check):

* ``runtime``: ``from metaedge.runtime.model import Model``; ``Model.load(bundle, backend="onnxruntime")``
  (guarded, the default);
  ``adapt(xs, ys, steps=5)`` on 10 shots; ``predict`` 100 points. It asserts that ``torch`` is not in
  ``sys.modules`` after importing and again at the end;
* ``native``: the same with ``backend="native"`` (the C library; onnxruntime is then never imported);
* ``pytorch``: ``metaedge.sdk.train.Run.load(run)`` (the trained sinusoid MAML run, MLP 1-40-40-1);
  ``learner.adapt_batch(state, xs, ys, 5, guard=True)`` (the same guarded steps as the runtime) and
  ``learner.predict_batch`` on the 100 points; ``torch.set_num_threads(1)``;
* ``python``: this script's child mode doing nothing (interpreter + the script's stdlib imports), the floor
  both of the others stand on.

The peak is also read after the imports and after loading, so the table splits it into stages (``ru_maxrss``
only grows). The processes run one at a time, interleaved (rotating order), and the figure is the median over
repeats. Both adapting contenders save their predictions; the driver checks that they agree.

Why ``/bin/sh`` starts the children: on Linux a process that ``exec``s keeps the peak RSS of the process it
was forked from in ``ru_maxrss`` (``exec`` folds the old address space's high-water mark into the signal
struct), so a child started directly by a large driver would report at least the driver's peak. The driver
therefore starts each child through ``sh -c '"$@"; exit $?'``: the shell forks a clean child (fresh signal
struct) which then ``exec``s Python. ``VmHWM`` (per address space, not inherited) is printed alongside to show
the two agree.

Results go to ``benchmarks/results/runtime_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _protocol import write_json

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
RUN = ROOT / "runs" / "bench-sinusoid" / "maml"
OUT = ROOT / "benchmarks" / "results" / "runtime_memory.json"
MARK = "@@CHILD@@"
STEPS = 5
KINDS = ("python", "runtime", "native", "pytorch")
GOAL = 1 / 3


def peak_kib() -> int:
    """``ru_maxrss`` of this process in KiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else int(peak)


def proc_status_kib(key: str) -> int | None:
    """``VmHWM`` / ``VmRSS`` from ``/proc/self/status`` in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --- children ----------------------------------------------------------------------------------------------
def child(kind: str, bundle: str, run: str, pred_out: str, seed: int) -> dict[str, Any]:
    """Do one contender's job in this (fresh) process and report its peak memory by stage."""
    stages: dict[str, int] = {"start": peak_kib()}
    info: dict[str, Any] = {}
    if kind in ("runtime", "native"):
        import numpy as np
        from runtime_latency import sinusoid_tasks

        from metaedge.runtime.model import Model

        assert "torch" not in sys.modules, "importing the runtime imported torch"
        stages["import"] = peak_kib()
        model = Model.load(bundle, backend="onnxruntime" if kind == "runtime" else "native")
        stages["load"] = peak_kib()
        data = sinusoid_tasks(1, seed)
        adapted = model.adapt(data["xs"][0], data["ys"][0], steps=STEPS)
        pred = adapted.predict(data["xq"][0])
        stages["adapt_predict"] = peak_kib()
        np.save(pred_out, pred)
        assert "torch" not in sys.modules, "the runtime imported torch while adapting"
        info = {"steps_kept": adapted.steps_kept, "torch_in_sys_modules": "torch" in sys.modules,
                "onnxruntime_in_sys_modules": "onnxruntime" in sys.modules, "modules": len(sys.modules)}
    elif kind == "pytorch":
        import numpy as np
        import torch
        from runtime_latency import sinusoid_tasks

        from metaedge.sdk.run import Run

        torch.set_num_threads(1)
        stages["import"] = peak_kib()
        loaded = Run.load(run)
        stages["load"] = peak_kib()
        data = sinusoid_tasks(1, seed)
        xs, ys, xq = (torch.from_numpy(data[k]) for k in ("xs", "ys", "xq"))
        traj = loaded.learner.adapt_batch(loaded.state, xs, ys, STEPS, guard=True)
        pred = loaded.learner.predict_batch(loaded.state, traj[STEPS], xq)[0].numpy()
        stages["adapt_predict"] = peak_kib()
        np.save(pred_out, pred)
        info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "modules": len(sys.modules)}
    elif kind != "python":
        raise ValueError(f"unknown child kind {kind!r}; use one of {KINDS}")
    return {"kind": kind, "ru_maxrss_kib": peak_kib(), "vmhwm_kib": proc_status_kib("VmHWM"),
            "vmrss_kib": proc_status_kib("VmRSS"), "stages_kib": stages, **info}


def run_child(kind: str, bundle: Path, run: Path, pred_out: Path, seed: int) -> dict[str, Any]:
    """Start ``kind`` in a fresh interpreter (through ``sh``, see the module docstring) and parse its report."""
    cmd = [sys.executable, str(HERE), "--child", kind, "--bundle", str(bundle), "--run", str(run),
           "--pred-out", str(pred_out), "--seed", str(seed)]
    proc = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd], capture_output=True, text=True,
                          cwd=str(HERE.parent))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} child failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK) :])


# --- driver ------------------------------------------------------------------------------------------------
def mib(kib: float) -> float:
    return kib / 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 process per contender")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per contender (median reported)")
    p.add_argument("--run", default=str(RUN), help="trained sinusoid MAML run directory")
    p.add_argument("--bundle", default=None, help="an exported bundle of --run (default: export into a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--child", choices=KINDS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pred-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        report = child(args.child, args.bundle, args.run, args.pred_out, args.seed)
        sys.stdout.write(f"{MARK} {json.dumps(report)}\n")
        return 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runtime_memory_") as tmp_name:
        tmp = Path(tmp_name)
        if args.bundle:
            bundle, export_s = Path(args.bundle), None
        else:
            from runtime_latency import export_bundle_cli

            bundle = tmp / "sin.meb"
            export_s = export_bundle_cli(Path(args.run), bundle)
            print(f"exported {args.run} -> {bundle} in {export_s:.1f}s", flush=True)
        reports: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for r in range(args.repeats):
            order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
            for kind in order:
                rep = run_child(kind, bundle, Path(args.run), tmp / f"pred_{kind}.npy", args.seed)
                reports[kind].append(rep)
                print(f"  repeat {r + 1}/{args.repeats} {kind:8}: ru_maxrss {mib(rep['ru_maxrss_kib']):7.1f} MiB, "
                      f"VmHWM {mib(rep['vmhwm_kib'] or 0):7.1f} MiB", flush=True)
        import numpy as np

        pred_pt = np.load(tmp / "pred_pytorch.npy")
        agree = max(float(np.abs(np.load(tmp / f"pred_{k}.npy") - pred_pt).max()) for k in ("runtime", "native"))

    med = {k: statistics.median(r["ru_maxrss_kib"] for r in v) for k, v in reports.items()}
    hwm = {k: statistics.median((r["vmhwm_kib"] or 0) for r in v) for k, v in reports.items()}
    stages = {k: {s: statistics.median(r["stages_kib"][s] for r in v) for s in v[0]["stages_kib"]}
              for k, v in reports.items()}
    ratio = med["runtime"] / med["pytorch"]
    ratio_native = med["native"] / med["pytorch"]
    ratio_above_floor = (med["runtime"] - med["python"]) / (med["pytorch"] - med["python"])
    goal = ratio <= GOAL and ratio_native <= GOAL

    print()
    print(f"peak RSS of a fresh process: load bundle/run, adapt {STEPS} steps on 10 shots, predict 100 points "
          f"(median of {args.repeats} processes each)")
    head = (f"{'contender':10} {'ru_maxrss MiB':>13} {'VmHWM MiB':>10} {'after import':>12} {'after load':>10} "
            f"{'after adapt':>11} {'vs pytorch':>10}")
    print(head)
    print("-" * len(head))
    for k in ("runtime", "native", "pytorch", "python"):
        st = stages[k]
        cols = [mib(st.get(s, st["start"])) for s in ("import", "load", "adapt_predict")]
        print(f"{k:10} {mib(med[k]):>13.1f} {mib(hwm[k]):>10.1f} {cols[0]:>12.1f} {cols[1]:>10.1f} {cols[2]:>11.1f} "
              f"{med[k] / med['pytorch']:>10.3f}")
    print(f"runtime (ONNX Runtime) / pytorch = {ratio:.3f} (above the bare interpreter: {ratio_above_floor:.3f}); "
          f"runtime (native C) / pytorch = {ratio_native:.3f}; goal runtime <= 1/3 of PyTorch: "
          f"{'MET' if goal else 'NOT MET'}")
    print(f"predictions agree: max |runtime - pytorch| = {agree:.1e}; runtime kept "
          f"{reports['runtime'][0]['steps_kept']} of {STEPS} guarded steps; torch imported by the runtime child: "
          f"{any(r['torch_in_sys_modules'] for r in reports['runtime'])}")

    record = {
        "benchmark": "runtime_memory",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setting": {"run": str(args.run), "model": "MLP 1-40-40-1 relu", "shots": 10, "steps": STEPS,
                    "predict_n": 100, "guard": True, "seed": args.seed, "bundle_export_seconds": export_s},
        "protocol": {"repeats": args.repeats, "statistic": "median ru_maxrss (KiB) over fresh processes",
                     "order": "interleaved, rotating per repeat",
                     "launch": "via /bin/sh -c '\"$@\"; exit $?' so ru_maxrss does not inherit the driver's peak"},
        "median_ru_maxrss_mib": {k: mib(v) for k, v in med.items()},
        "median_vmhwm_mib": {k: mib(v) for k, v in hwm.items()},
        "median_stage_peaks_mib": {k: {s: mib(v) for s, v in st.items()} for k, st in stages.items()},
        "ratio_runtime_over_pytorch": ratio,
        "ratio_native_over_pytorch": ratio_native,
        "ratio_above_bare_python": ratio_above_floor,
        "goal": {"target": "runtime peak RSS <= 1/3 of PyTorch", "met": goal},
        "predictions_max_abs_diff": agree,
        "reports": reports,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "machine": platform.machine(), "cpu_count": os.cpu_count(),
                        "loadavg": list(os.getloadavg())},
        "total_seconds": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
