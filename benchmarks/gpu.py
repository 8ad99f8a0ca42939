"""GPU benchmarks (issue 15), run by ``benchmarks/gpu.sh`` on a machine with a CUDA GPU; writes what ran.

1. **Meta-training speed on the GPU**: ``meta_train_speed.py --device cuda`` (MAML and first-order, 1 and 5 inner
   steps, the sinusoid benchmark), against learn2learn on the same GPU when ``--l2l-python`` points at an
   interpreter with learn2learn (otherwise against the per-task-loop PyTorch reference, which the benchmark says).
2. **Omniglot to the papers' budget** (``omniglot.py --device cuda --proto-iterations 20000 --maml-iterations
   60000``), or as much of it as fits in ``--budget-minutes`` per learner; evaluated on the Vinyals val classes.

Each step runs in its own process; ``benchmarks/results/gpu.json`` records, per step, the command, its exit
status, wall seconds and the last lines of its output, and the GPU it ran on. Without a CUDA GPU it records that
and runs nothing (exit status 0: there is nothing wrong with the machine, it just has no GPU).

    bash benchmarks/gpu.sh [--budget-minutes 4] [--l2l-python PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def probe() -> dict[str, object]:
    """The GPU torch sees, or why there is none (torch is imported in a child: a broken CUDA install must not take
    this driver down with it)."""
    code = ("import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'cuda': ok, 'torch': "
            "torch.__version__, 'gpu': torch.cuda.get_device_name(0) if ok else None, 'cuda_version': "
            "torch.version.cuda}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"cuda": False, "reason": f"torch does not import: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_step(name: str, command: list[str], timeout_s: float) -> dict[str, object]:
    """Run one benchmark step; its record (command, status, seconds, output tail)."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=HERE.parent)
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:  # its output so far comes as bytes even in text mode
        partial = e.stdout or b""
        status, output = "timeout", partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    seconds = time.perf_counter() - t0
    tail = output.strip().splitlines()[-25:]
    print("\n".join(tail), flush=True)
    return {"name": name, "command": command, "status": status, "seconds": seconds, "output_tail": tail}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-minutes", type=float, default=4.0, help="Omniglot training time per learner")
    ap.add_argument("--l2l-python", help="an interpreter with learn2learn, for the side-by-side speed rows")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few iterations, one short Omniglot budget")
    ap.add_argument("--device", default="cuda", help="torch device (cpu only to try this script without a GPU)")
    args = ap.parse_args()
    info = probe()
    record: dict[str, object] = {"probe": info, "device": args.device, "steps": []}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("gpu.json" if args.device.startswith("cuda") else f"gpu_{args.device}.json")
    if args.device.startswith("cuda") and not info.get("cuda"):
        record["ran"] = False
        record["reason"] = info.get("reason") or "torch sees no CUDA GPU on this machine"
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"no CUDA GPU ({record['reason']}): nothing ran; recorded in {out}")
        return 0
    speed = [sys.executable, str(HERE / "meta_train_speed.py"), "--device", args.device,
             "--out", str(RESULTS / f"gpu_meta_train_speed_{args.device.split(':')[0]}.json")]
    speed += ["--quick"] if args.quick else ["--repeats", "3", "--iters", "200"]
    if args.l2l_python:
        speed += ["--l2l-python", args.l2l_python]
    omniglot = [sys.executable, str(HERE / "omniglot.py"), "--device", args.device, "--proto-iterations", "20000",
                "--maml-iterations", "60000", "--budget-minutes", str(0.2 if args.quick else args.budget_minutes),
                "--runs", str(Path("/tmp") / f"metaedge-gpu-omniglot-{int(time.time())}"),
                "--result", f"gpu_omniglot_{args.device.split(':')[0]}"]
    if args.quick:
        omniglot += ["--episodes", "20", "--calibrate-iterations", "3"]
    steps = [("meta_train_speed", speed, 900.0), ("omniglot", omniglot, 60 * (2 * args.budget_minutes + 10))]
    for name, command, timeout_s in steps:
        record["steps"].append(run_step(name, command, timeout_s))  # type: ignore[union-attr]
        out.write_text(json.dumps(record, indent=2) + "\n")
    record["ran"] = True
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"recorded in {out}")
    return 0 if all(s["status"] == 0 for s in record["steps"]) else 1  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())
