"""Load a bundle with the torch-free runtime, adapt and predict on fixed inputs, write what came out as JSON.

    python scripts/runtime_probe.py BUNDLE INPUTS.npz OUT.json     # INPUTS holds xs, ys, xq
    python scripts/runtime_probe.py --compare A.json B.json        # largest difference between two probes

Runs on any machine with numpy + onnxruntime and the metaedge ``runtime``/``devices`` packages (no torch, no click):
``scripts/aarch64_check.sh`` runs it inside an emulated arm64 root and on this machine, then compares the two.
The inputs come from a file rather than a random generator so both sides see bit-identical data.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def probe(bundle: Path, inputs: Path) -> dict:
    """Adapt on ``xs``/``ys`` (default steps and one step) and predict ``xq``; the numbers and the platform."""
    import numpy as np
    import onnxruntime

    from metaedge.devices import detect
    from metaedge.runtime.model import Model

    with np.load(inputs, allow_pickle=False) as z:
        xs, ys, xq = z["xs"], z["ys"], z["xq"]
    model = Model.load(bundle)
    adapted = model.adapt(xs, ys)
    one_step = model.adapt(xs, ys, steps=1)
    found = detect()
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "detected_profile": found.profile,
        "steps_kept": adapted.steps_kept,
        "theta": adapted.theta.astype(float).tolist(),
        "predict": adapted.predict(xq).astype(float).ravel().tolist(),
        "predict_one_step": one_step.predict(xq).astype(float).ravel().tolist(),
        "predict_unadapted": model.adapt(xs, ys, steps=0).predict(xq).astype(float).ravel().tolist(),
    }


def compare(a: dict, b: dict) -> dict:
    """Largest absolute difference per output between two probes (and overall)."""
    keys = ("theta", "predict", "predict_one_step", "predict_unadapted")
    diffs = {}
    for k in keys:
        if len(a[k]) != len(b[k]):
            raise ValueError(f"{k}: {len(a[k])} values on {a['machine']} but {len(b[k])} on {b['machine']}")
        diffs[k] = max((abs(x - y) for x, y in zip(a[k], b[k])), default=0.0)
    return {"machines": [a["machine"], b["machine"]], "steps_kept": [a["steps_kept"], b["steps_kept"]],
            "max_abs_difference": max(diffs.values()), "per_output": diffs}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--compare":
        result = compare(*(json.loads(Path(p).read_text()) for p in argv[1:]))
        print(json.dumps(result, indent=2))
        return 0 if result["max_abs_difference"] <= 1e-5 and len(set(result["steps_kept"])) == 1 else 1
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = probe(Path(argv[0]), Path(argv[1]))
    Path(argv[2]).write_text(json.dumps(out, indent=1) + "\n")
    print(f"runtime_probe: {out['machine']}: kept {out['steps_kept']} steps, wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
