"""Run directory -> bundle directory (``manifest.json``, ONNX graphs, ``theta0.npy``, ``rates.npy``).

The adapted parameters travel as one flat float32 vector whose layout (name, shape, offset) the manifest
records; frozen parameters are constants inside the graphs. The bundle is written into a temporary sibling
directory and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..runtime.bundle import FORMAT_VERSION, sha256
from ..sdk.learners import MetaLearner
from ..sdk.learners.newton import MIN_DAMPING, GaussNewtonLoop
from ..sdk.train import Run, sample_options, task_rng, to_tensors
from .graphs import export_embedding, export_graphs
from .ops import ops_report

#: what ``metaedge export --format`` accepts
FORMATS = ("onnx", "c", "all")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def solver_of(learner: MetaLearner) -> str:
    """How a device adapts for this learner: ``sgd`` (the rate-weighted gradient step of ``adapt_step.onnx``),
    ``gauss-newton`` (a damped least-squares solve on ``gauss_newton.onnx``'s Jacobian) or ``prototypes``."""
    if learner.algo == "protonet":
        return "prototypes"
    return "gauss-newton" if isinstance(learner.inner, GaussNewtonLoop) else "sgd"


def _embedding_dim(learner, xs: torch.Tensor) -> int:
    with torch.no_grad():
        return int(learner.model.eval()(xs[:1]).shape[-1])


def export_bundle(run_path: str | Path, out: str | Path, opset: int = 18, check: bool = True,
                  tolerance: float = 1e-5, inner_steps: int | None = None, adapt: str | None = None,
                  formats: str = "onnx") -> Path:
    """Export the run at ``run_path`` to the bundle directory ``out`` (which must not exist yet); an ``out``
    ending in ``.zip`` gets a zip of the bundle directory instead.

    ``inner_steps`` (default: the run's) is the device's default step count; for gradient learners those steps
    are also exported unrolled into one graph (``adapt_steps.onnx``) so adapting costs one ONNX Runtime call.
    ``adapt`` overrides the run's adaptation spec (``all``, ``head``, ``biases`` or name patterns).
    ``formats``: ``onnx`` (graphs for ONNX Runtime / TensorRT), ``c`` (``model.mebin`` + ``model_data.h`` for the
    C library; MLP models only) or ``all``.
    """
    if formats not in FORMATS:
        raise ValueError(f"unknown bundle format {formats!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix == ".zip":
        return _zipped(run_path, out, opset=opset, check=check, tolerance=tolerance, inner_steps=inner_steps,
                       adapt=adapt, formats=formats)
    run = Run.load(run_path)
    if adapt:
        run = run.with_adaptation(adapt)
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another output path")
    solver = solver_of(run.learner)
    prototypes = solver == "prototypes"  # the device builds class prototypes from embeddings
    fam, norm, learner = run.family, run.normalizer, run.learner
    sample = norm.batch(fam.sample_batch(task_rng(run.config.seed + 101, 0), 1, run.config.shots, run.config.queries,
                                         **sample_options(run.config, fam)))
    xs, ys, _, _ = (t[0] for t in to_tensors(sample))
    fast, _ = learner.split(run.state["params"])
    layout, offset = [], 0
    for name, tensor in fast.items():
        layout.append({"name": name, "shape": list(tensor.shape), "offset": offset, "size": tensor.numel()})
        offset += tensor.numel()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        steps = learner.inner_steps if inner_steps is None else int(inner_steps)
        if steps < 1 and not prototypes:
            raise ValueError(f"--inner-steps must be at least 1, got {steps}")
        graphs = {}
        if formats in ("onnx", "all"):
            graphs = (export_embedding(learner, run.state, tmp, xs, opset=opset) if prototypes
                      else export_graphs(learner, run.state, tmp, xs, ys, opset=opset,
                                         unrolled_steps=steps if solver == "sgd" else 0))
        firmware = {}
        if formats in ("c", "all"):
            from .firmware import write_firmware

            firmware = {p.suffix.lstrip("."): p for p in write_firmware(run, tmp)}
        theta = np.concatenate([np.zeros(0)] + [fast[e["name"]].detach().numpy().ravel() for e in layout])
        rates = np.concatenate([np.zeros(0)] + [run.state["rates"][e["name"]].detach().numpy().ravel() for e in layout])
        np.save(tmp / "theta0.npy", theta.astype(np.float32))
        np.save(tmp / "rates.npy", rates.astype(np.float32))
        files = [p.name for p in (*graphs.values(), *firmware.values())] + ["theta0.npy", "rates.npy"]
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "task_kind": fam.task_kind,
            "loss": learner.loss_name,
            "algo": learner.algo,
            "family": fam.describe(),
            "input": {"shape": list(fam.input_shape), "names": list(fam.input_names), "units": list(fam.input_units)},
            "output": {"dim": learner.output_dim or fam.output_dim, "names": list(fam.output_names),
                       "units": list(fam.output_units)},
            "normalization": norm.to_dict(),
            "adaptation": {"spec": learner.adapt_spec, "solver": solver, "inner_steps": 0 if prototypes else steps,
                           "parameters": layout, "size": offset, "prototypes": prototypes,
                           "embedding_dim": _embedding_dim(learner, xs) if prototypes else None,
                           **({"min_damping": MIN_DAMPING} if solver == "gauss-newton" else {})},
            "graphs": {k: p.name for k, p in graphs.items()},
            "firmware": {k: p.name for k, p in firmware.items()},
            "ops": ops_report(tmp),
            "files": {name: sha256(tmp / name) for name in files},
            "provenance": {"run": str(Path(run_path).resolve()), "git_commit": _git_commit(),
                           "metaedge_version": __version__, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                           "train": run.config.to_dict()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if check:
            worst = parity(run, tmp)
            manifest["parity_max_relative_difference"] = worst
            if worst > tolerance:
                raise ValueError(f"exported graphs differ from PyTorch by {worst:.2e} (relative) > {tolerance:.0e}; "
                                 "the bundle was not written")
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _zipped(run_path, out: Path, **options) -> Path:
    """Export into a temporary directory, zip it, and rename the zip into place."""
    import zipfile

    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another output path")
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        bundle = export_bundle(run_path, Path(tmp) / "bundle", **options)
        partial = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(bundle.iterdir()):
                z.write(f, f.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(partial), out)
    return out


def parity(run: Run, bundle_dir: Path, tasks: int = 3) -> float:
    """Largest relative difference between the runtime (ONNX Runtime) and PyTorch after adapting, both with the
    bundle's default step count (the unrolled graph) and with 5 single steps (the step graph)."""
    default = json.loads((bundle_dir / "manifest.json").read_text())["adaptation"]["inner_steps"]
    return max(_parity(run, bundle_dir, tasks, s) for s in sorted({default, 5}))


def _parity(run: Run, bundle_dir: Path, tasks: int, steps: int) -> float:
    from ..runtime.model import Model  # the runtime has no torch dependency; imported here to check it

    model = Model.load(bundle_dir, guard=False)
    classification = run.family.task_kind == "classification"
    batch = run.family.sample_batch(task_rng(run.config.seed + 202, 0), tasks, run.config.shots,
                                    5 if classification else 20, **sample_options(run.config, run.family))
    nb = run.normalizer.batch(batch)
    xs, ys, xq, _ = to_tensors(nb)
    with torch.no_grad():
        ref = run.learner.predictions_after_steps(run.state, xs, ys, xq, [steps])[steps].numpy()
    ref = ref if classification else run.normalizer.y_inverse(ref)
    worst = 0.0
    for i in range(tasks):
        adapted = model.adapt(batch.x_support[i], batch.y_support[i], steps=steps)
        ours = adapted.logits(batch.x_query[i]) if classification else adapted.predict(batch.x_query[i])
        scale = max(float(np.abs(ref[i]).max()), 1e-6)
        worst = max(worst, float(np.abs(ours - ref[i]).max()) / scale)
    return worst
