"""Export parity for every learner and both model kinds: bundle (ONNX Runtime) vs PyTorch after K adapt steps.

For each (learner, model) pair a short meta-training run is made (so Meta-SGD rates and batch-norm weights
are no longer at their initial values), exported with ``export_bundle`` (whose check adapts 3 sampled tasks
with the bundle's default steps and with 5 single steps, and compares predictions with the learner's own
PyTorch functions), and the largest relative difference is tabled with the export time and any operator
outside TensorRT's set.

* MLP: sinusoid regression (MLP 1-40-40-1) for MAML, first-order MAML, Meta-SGD, Reptile, ANIL; the ``ridge``
  learner on simulated pressure sensors (MLP with skip, Gauss-Newton graph); ProtoNets with an MLP embedding
  on the built-in ``glyphs`` characters.
* Conv4 (batch norm, per-task statistics): 5-way 1-shot ``glyphs`` for MAML, first-order MAML, Meta-SGD,
  Reptile, ANIL (every parameter adapted: convolution backward decomposed into plain convolutions) and
  ProtoNets (embedding graph, running statistics).

    python benchmarks/export_parity.py [--iterations 20] [--tolerance 1e-5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import write_result

from metaedge.export.bundle import export_bundle
from metaedge.runtime.bundle import Bundle
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.train import train

GRADIENT = ["maml", "fomaml", "metasgd", "reptile", "anil"]


def configs(iterations: int) -> list[tuple[str, TrainConfig]]:
    """``(model kind, config)`` for every pair measured."""
    common = {"iterations": iterations, "log_every": 10**6, "checkpoint_every": 10**6}
    mlp = [("MLP", TrainConfig(family="sinusoid", algo=a, shots=10, queries=10, meta_batch=4, inner_steps=2,
                               inner_lr=0.01, **common)) for a in GRADIENT]
    mlp += [("MLP", TrainConfig(family="sensor-pressure", algo="ridge", shots=3, queries=10, meta_batch=4,
                                hidden=[32, 32], activation="tanh", skip=True, inner_lr=0.1, **common)),
            ("MLP", TrainConfig(family="glyphs", algo="protonet", model="mlp", hidden=[64, 64], ways=5, shots=1,
                                queries=2, meta_batch=1, meta_lr=1e-3, **common))]
    conv = [("Conv4", TrainConfig(family="glyphs", algo=a, ways=5, shots=1, queries=1, meta_batch=2, inner_steps=2,
                                  inner_lr=0.4, meta_lr=1e-3, **common)) for a in GRADIENT]
    conv += [("Conv4", TrainConfig(family="glyphs", algo="protonet", ways=5, shots=1, queries=2, meta_batch=1,
                                   meta_lr=1e-3, **common))]
    return mlp + conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20, help="meta-training iterations per run")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, cfg) in enumerate(configs(args.iterations)):
            run = train(cfg, Path(tmp) / f"run{i}", progress=False)
            t0 = time.perf_counter()
            bundle = export_bundle(run, Path(tmp) / f"bundle{i}", tolerance=args.tolerance)
            seconds = time.perf_counter() - t0
            m = Bundle.open(bundle).manifest
            outside = sorted({op for g in m.ops.values() for op in g.outside_tensorrt})
            rows.append({"learner": cfg.algo, "model": kind, "family": cfg.family,
                         "solver": m.adaptation.solver, "adapted_parameters": m.adaptation.size,
                         "graphs": sorted(m.graphs.files().values()), "export_seconds": round(seconds, 2),
                         "parity_max_relative_difference": m.parity.max_relative_difference,
                         "parity_median_relative_difference": m.parity.median_relative_difference,
                         "worst_at": m.parity.worst_at,
                         "outside_tensorrt": outside})
            r = rows[-1]
            print(f"{r['learner']:8s} {kind:6s} {cfg.family:16s} {r['solver']:12s} P={r['adapted_parameters']:7d} "
                  f"parity median {r['parity_median_relative_difference']:.1e} "
                  f"max {r['parity_max_relative_difference']:.1e} ({r['worst_at']})  export {seconds:5.1f} s  "
                  f"outside TensorRT: {', '.join(outside) or 'none'}", flush=True)
    worst = max(r["parity_max_relative_difference"] for r in rows)
    print(f"\nworst relative difference {worst:.1e} (tolerance {args.tolerance:.0e})")
    print(f"written to {write_result('export_parity', {'tolerance': args.tolerance, 'rows': rows})}")


if __name__ == "__main__":
    main()
