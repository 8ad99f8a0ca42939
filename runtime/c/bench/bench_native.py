"""Per-call latency of the Python ``native`` backend (ctypes) on me_bench's workload: the sinusoid MLP compiled into
``examples/firmware/model_data.h`` (or ``--mebin PATH``, e.g. a bundle's ``model.mebin``), 10 shots, 5 guarded
steps, then predict 100 points; median of ``--repeats`` calls of ``NativeModel.adapt`` + ``.predict``.

    METAEDGE_NATIVE_LIB=build/host-release/runtime/c/libmetaedge.so .venv/bin/python runtime/c/bench/bench_native.py
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from metaedge.runtime.native import NativeModel

ROOT = Path(__file__).resolve().parents[3]


def example_mebin() -> bytes:
    text = (ROOT / "examples/firmware/model_data.h").read_text()
    body = text[text.index("{") + 1:text.index("}")]
    return bytes(int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]{2}", body))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mebin", type=Path)
    ap.add_argument("--repeats", type=int, default=5000)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    model = NativeModel(args.mebin.read_bytes() if args.mebin else example_mebin(), max_shots=args.shots)
    u = np.linspace(-1, 1, args.shots, dtype=np.float32)
    xs = (5 * u * (0.6 + 0.4 * u * u)).astype(np.float32)[:, None]
    ys = (1.5 * np.sin(xs - 1)).astype(np.float32)
    xq = np.linspace(-5, 5, 100, dtype=np.float32)[:, None]
    times = []
    for r in range(args.repeats + args.repeats // 10):
        t0 = time.perf_counter()
        theta, kept = model.adapt(xs, ys, steps=args.steps)
        pred = model.predict(theta, xq)
        t1 = time.perf_counter()
        if r >= args.repeats // 10:
            times.append(t1 - t0)
    t = np.sort(np.array(times)) * 1e6
    print(f"native adapt+predict: median {np.median(t):.1f} us  p10 {t[len(t) // 10]:.1f}"
          f"  p90 {t[len(t) * 9 // 10]:.1f}  ({args.repeats} calls; {kept} steps kept;"
          f" prediction at x={xq[50, 0]:.4f}: {pred[50, 0]:.4f})")


if __name__ == "__main__":
    main()
