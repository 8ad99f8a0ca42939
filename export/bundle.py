"""Run directory -> bundle directory (``manifest.json``, ONNX graphs, ``theta0.npy``, ``rates.npy``).

The adapted parameters travel as one flat float32 vector whose layout (name, shape, offset) the manifest
records; frozen parameters are constants inside the graphs. :func:`export_bundle` is a short pipeline of named
steps, each a function of its own: :func:`write_graphs`, :func:`write_firmware_files`, :func:`write_parameters`,
:func:`build_manifest`, :func:`run_checks`, :func:`~metaedge.export.uncertainty.fit_uncertainty` (regression)
and :func:`commit`. Every step but the last writes into a temporary
sibling folder of the output (:func:`staging`); :func:`commit` renames it into place, so a failed export leaves
nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_rename_folder
from ..devices import checked_devices, get_profile, load_profiles
from ..errors import ExistsError, InputError
from ..runtime import signing
from ..runtime.bundle import Bundle, sha256
from ..runtime.errors import ManifestError
from ..runtime.manifest import (
    FORMAT_VERSION,
    Adaptation,
    Control,
    DeviceFit,
    Firmware,
    Graphs,
    InputSpec,
    Layout,
    Manifest,
    NativeParity,
    Normalization,
    OnnxParity,
    OutputSpec,
    Provenance,
)
from ..sdk.learners import DeviceSolver, Learner
from ..sdk.run import Run, sample_options, task_rng, to_tensors
from ..sdk.tasks import TaskBatch
from .footprint import footprint
from .graphs import export_embedding, export_graphs
from .ops import ops_report
from .uncertainty import NoCalibrationTasks, fit_uncertainty

_log = logging.getLogger("metaedge.export")

#: what ``metaedge export --format`` accepts; ``auto`` is ``all`` where the C library supports the model, else ``onnx``
FORMATS = ("auto", "onnx", "c", "all", "tensorrt")
#: the formats that ship ONNX graphs, and those that ship the C library's files
ONNX_FORMATS = ("onnx", "all", "auto", "tensorrt")
C_FORMATS = ("c", "all", "auto")


def git_commit() -> str | None:
    """The commit of this checkout (None outside a git work tree or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def solver_of(learner: Learner) -> str:
    """The kind of the learner's device solver (``sgd``, ``gauss-newton`` or ``prototypes``)."""
    return learner.device_solver.kind


def device_solver(learner: Learner, inner_steps: int | None = None) -> DeviceSolver:
    """The learner's device solver with ``inner_steps`` (default: the learner's) as the device's default steps;
    a solver without steps (prototypes) keeps none."""
    solver = learner.device_solver
    if inner_steps is None or solver.kind == "prototypes":
        return solver
    return replace(solver, steps=int(inner_steps))


def _embedding_dim(learner, xs: torch.Tensor) -> int:
    with torch.no_grad():
        return int(learner.model.eval()(xs[:1]).shape[-1])


@dataclass(frozen=True)
class Example:
    """One standardised support set of the run's family, for tracing: ``xs`` ``(k, *input_shape)``, ``ys``."""

    xs: torch.Tensor
    ys: torch.Tensor

    @classmethod
    def of(cls, run: Run) -> Example:
        fam = run.family
        sample = run.normalizer.batch(fam.sample_batch(task_rng(run.config.seed + 101, 0), 1, run.config.shots,
                                                       run.config.queries, **sample_options(run.config, fam)))
        xs, ys, _, _ = (t[0] for t in to_tensors(sample))
        return cls(xs, ys)


# --- the steps ------------------------------------------------------------------------------------------------------

def write_graphs(run: Run, folder: Path, solver: DeviceSolver, example: Example, opset: int = 18) -> dict[str, Path]:
    """The ONNX graphs by role (``forward``, ``adapt_step``/``adapt_steps`` or ``gauss_newton``) in ``folder``."""
    if solver.kind == "prototypes":
        return export_embedding(run.learner, run.state, folder, example.xs, opset=opset)
    return export_graphs(run.learner, run.state, folder, example.xs, example.ys, opset=opset,
                         unrolled_steps=solver.steps if solver.unrolls else 0)


def write_firmware_files(run: Run, folder: Path, solver: DeviceSolver, formats: str
                         ) -> tuple[dict[str, Path], str | None]:
    """``model.mebin`` and ``model_data.h`` by suffix in ``folder``, and why they were skipped (``auto`` only:
    a model the C library cannot run makes the bundle ONNX-only instead of failing)."""
    if formats not in C_FORMATS:
        return {}, None
    from .firmware import write_firmware

    try:
        paths = write_firmware(run, folder, inner_steps=solver.steps, control=control_part(run))
    except InputError as e:
        if formats != "auto":
            raise
        return {}, str(e)  # e.g. a Conv4: the bundle is ONNX-only
    return {p.suffix.lstrip("."): p for p in paths}, None


def parameter_layout(run: Run) -> Layout:
    """Name, shape, offset and size of each adapted parameter in the flat device state, in learner order."""
    fast, _ = run.learner.split(run.state["params"])
    return Layout.build({name: tuple(tensor.shape) for name, tensor in fast.items()})


def _flat(run: Run, layout: Layout, group: str) -> np.ndarray:
    """The run's ``params`` or ``rates`` of the adapted parameters as one flat array, in ``layout`` order."""
    return layout.flatten({n: run.state[group][n].detach().cpu().numpy() for n in layout.names})


def write_parameters(run: Run, folder: Path, layout: Layout) -> list[Path]:
    """``theta0.npy`` (the meta-learned adapted parameters, flat float32) and ``rates.npy`` (their step sizes)."""
    paths = [folder / "theta0.npy", folder / "rates.npy"]
    np.save(paths[0], _flat(run, layout, "params"))
    np.save(paths[1], _flat(run, layout, "rates"))
    return paths


def control_part(run: Run) -> Control | None:
    """The controller the bundle states: the family's ``control_defaults`` overridden by the run's ``control``."""
    given = {**(run.family.control_defaults or {}), **(run.config.control or {})}
    if not given:
        return None
    try:
        return Control._read(given, "control")
    except ManifestError as e:  # its advice (re-export) does not apply: the config is what to fix
        problem = str(e).split("; ")[0].removeprefix("manifest field ")
        raise InputError(f"the training config's {problem}; fix the control section of the config") from None


def build_manifest(run: Run, run_path: str | Path, folder: Path, solver: DeviceSolver, example: Example,
                   layout: Layout, graphs: dict[str, Path], firmware: dict[str, Path],
                   firmware_skipped: str | None, files: list[Path]) -> Manifest:
    """The bundle's manifest for the files staged in ``folder`` (hashes, footprint and device fits included)."""
    fam, learner, norm = run.family, run.learner, run.normalizer
    prototypes = solver.kind == "prototypes"
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        task_kind=fam.task_kind,
        loss=learner.loss_name,
        algo=learner.name,
        family=fam.describe(),
        input=InputSpec(tuple(fam.input_shape), tuple(fam.input_names), tuple(fam.input_units)),
        output=OutputSpec(learner.output_dim or fam.output_dim, tuple(fam.output_names), tuple(fam.output_units)),
        normalization=Normalization(**{k: tuple(v) for k, v in norm.to_dict().items()}),
        adaptation=Adaptation(spec=learner.adapt_spec, solver=solver.kind, inner_steps=solver.steps,
                              layout=layout, size=layout.size,
                              embedding_dim=_embedding_dim(learner, example.xs) if prototypes else None,
                              min_damping=solver.min_damping),
        graphs=Graphs(**{k: p.name for k, p in graphs.items()}),
        firmware=Firmware(**{k: p.name for k, p in firmware.items()}),
        firmware_skipped=firmware_skipped,
        ops=ops_report(folder),
        files={p.name: sha256(p) for p in files},
        provenance=Provenance(run=str(Path(run_path).resolve()), git_commit=git_commit(),
                              metaedge_version=__version__,
                              created=dt.datetime.now(dt.timezone.utc).isoformat(), train=run.config.to_dict()),
        control=control_part(run),
    )
    manifest = replace(manifest, footprint=footprint(folder, manifest.graphs, manifest.firmware,
                                                     shots=run.config.shots))
    fits = checked_devices(manifest, load_profiles())
    return replace(manifest, devices={name: DeviceFit(f.fits, f.problems, f.memory_bytes) for name, f in fits.items()})


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """``manifest.json`` in ``folder``."""
    path = folder / "manifest.json"
    path.write_text(manifest.to_json())
    return path


def run_checks(run: Run, folder: Path, manifest: Manifest, tolerance: float = 1e-5) -> Manifest:
    """Prove the staged bundle in ``folder`` (its ``manifest.json`` written) against PyTorch: the ONNX graphs
    (:func:`parity`) and the C library (:func:`native_parity`), each where the bundle has them.

    Returns ``manifest`` with the measured figures added (``parity``, ``native_parity``); raises
    :class:`InputError` naming the worst comparison when one is beyond ``tolerance``.
    """
    # step sizes that are one value per tensor are constants inside the graphs, which the parity below cannot tell
    # from rates.npy's: compare the file itself
    rates = np.load(folder / "rates.npy", allow_pickle=False)
    expected = _flat(run, manifest.adaptation.layout, "rates")
    if rates.shape != expected.shape or not np.array_equal(rates, expected.astype(rates.dtype)):
        raise InputError("rates.npy does not hold the run's step sizes; the bundle was not written")
    if manifest.has_graphs:
        measured = parity(run, folder)
        record = OnnxParity(max_relative_difference=measured.worst, worst_at=measured.worst_at,
                            median_relative_difference=measured.median, comparisons=measured.checked,
                            tolerance=tolerance, kink_tolerance=KINK_TOLERANCE)
        manifest = replace(manifest, parity=record, parity_max_relative_difference=measured.worst)
        failure = measured.failure(tolerance)
        if failure:
            raise InputError(f"{failure}; the bundle was not written")
    if manifest.has_mebin:
        native = native_parity(run, folder)
        manifest = replace(manifest, native_parity=native)
        if native.max_scaled_difference > tolerance:
            raise InputError(f"the C library's predictions differ from {native.reference} by "
                             f"{native.max_scaled_difference:.2e} (absolute, relative where outputs exceed "
                             f"1; {native.worst_at}) > {tolerance:.0e}; the bundle was not written")
    return manifest


def with_intervals(run: Run, folder: Path, manifest: Manifest, solver: DeviceSolver) -> Manifest:
    """Fit the staged regression bundle's predictive intervals (:func:`fit_uncertainty`) and add them to the
    manifest; a Gauss-Newton bundle's ``model.mebin`` is rewritten with them (format 4's interval section, for
    ``me_predict_interval``), its hashes and footprint updated: the network in it is unchanged."""
    try:
        uncertainty = fit_uncertainty(run, folder)
    except NoCalibrationTasks as e:
        _log.warning("exported without predictive intervals: %s", e)
        return manifest
    manifest = replace(manifest, uncertainty=uncertainty)
    if not manifest.has_mebin or solver.kind != "gauss-newton":
        return manifest
    from .firmware import write_firmware

    paths = write_firmware(run, folder, inner_steps=solver.steps, uncertainty=uncertainty, control=control_part(run))
    files = {**manifest.files, **{p.name: sha256(p) for p in paths}}
    manifest = replace(manifest, files=files, footprint=footprint(folder, manifest.graphs, manifest.firmware,
                                                                  shots=run.config.shots))
    fits = checked_devices(manifest, load_profiles())
    return replace(manifest, devices={name: DeviceFit(f.fits, f.problems, f.memory_bytes) for name, f in fits.items()})


def refuse_existing(out: Path) -> None:
    """Refuse an output path that exists: export never overwrites."""
    if out.exists() or out.is_symlink():
        raise ExistsError(f"{out} already exists; remove it or choose another output path")


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary sibling folder of ``out`` for the steps to write into; removed (with what it holds) if a step
    fails, and a no-op to remove once :func:`commit` has renamed it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit(staged: Path, out: Path) -> Path:
    """Make the staged folder the bundle at ``out``: flush its files to disk, then rename it into place.

    Refuses (:class:`ExistsError`) when ``out`` exists, leaving both untouched; the rename is atomic within one
    filesystem (``staging`` makes a sibling), so readers see no bundle or the whole one.
    """
    return atomic_rename_folder(staged, out)


# --- the pipeline ---------------------------------------------------------------------------------------------------

def export_bundle(run_path: str | Path, out: str | Path, opset: int = 18, check: bool = True,
                  tolerance: float = 1e-5, inner_steps: int | None = None, adapt: str | None = None,
                  formats: str = "auto", device: str | None = None, sign_key: str | Path | None = None,
                  intervals: bool = True) -> Path:
    """Export the run at ``run_path`` to the bundle directory ``out`` (which must not exist yet); an ``out``
    ending in ``.zip`` gets a zip of the bundle directory instead.

    ``inner_steps`` (default: the run's) is the device's default step count; for gradient learners those steps
    are also exported unrolled into one graph (``adapt_steps.onnx``) so adapting costs one ONNX Runtime call.
    ``adapt`` overrides the run's adaptation spec (``all``, ``head``, ``biases`` or name patterns).
    ``formats``: ``onnx`` (graphs for ONNX Runtime / TensorRT), ``c`` (``model.mebin`` + ``model_data.h`` for the
    C library; MLP models only), ``all``, or ``auto`` (default: ``all`` where the C library supports the model,
    otherwise ``onnx`` with the reason in the manifest's ``firmware_skipped``), or ``tensorrt``: the ONNX graphs
    plus TensorRT engines built for ``device`` (a profile name; needs TensorRT, i.e. the device or its family).
    The manifest records the bundle's memory footprint and, for every device profile, whether it fits.
    ``sign_key``: an Ed25519 private key (``metaedge keygen``) that signs the final ``manifest.json`` into
    ``manifest.sig`` before the bundle is moved into place (see :mod:`metaedge.runtime.signing`).
    ``intervals``: regression bundles get predictive intervals meta-fitted on meta-validation tasks
    (:func:`~metaedge.export.uncertainty.fit_uncertainty`, the manifest's ``uncertainty``).
    """
    if formats not in FORMATS:
        raise InputError(f"unknown bundle format {formats!r}; choose one of {', '.join(FORMATS)}")
    profile = None
    if formats == "tensorrt":
        if not device:
            raise InputError("--format tensorrt needs --device NAME (a Jetson profile; `metaedge devices` lists them)")
        profile = get_profile(device)
    if sign_key is not None:
        signing.load_private_key(sign_key)  # a wrong key fails now, not after the graphs are built
    out = Path(out)
    if out.suffix == ".zip":
        return _zipped(run_path, out, opset=opset, check=check, tolerance=tolerance, inner_steps=inner_steps,
                       adapt=adapt, formats=formats, device=device, sign_key=sign_key, intervals=intervals)
    run = Run.load(run_path)
    if adapt:
        run = run.with_adaptation(adapt)
    refuse_existing(out)
    solver = device_solver(run.learner, inner_steps)
    example = Example.of(run)
    layout = parameter_layout(run)
    with staging(out) as tmp:
        graphs = write_graphs(run, tmp, solver, example, opset) if formats in ONNX_FORMATS else {}
        firmware, skipped = write_firmware_files(run, tmp, solver, formats)
        files = [*graphs.values(), *firmware.values(), *write_parameters(run, tmp, layout)]
        manifest = build_manifest(run, run_path, tmp, solver, example, layout, graphs, firmware, skipped, files)
        write_manifest(tmp, manifest)
        if check:
            manifest = run_checks(run, tmp, manifest, tolerance)
            write_manifest(tmp, manifest)
        if intervals and not manifest.classification:
            write_manifest(tmp, with_intervals(run, tmp, manifest, solver))
        if profile is not None:
            from .tensorrt import export_tensorrt

            export_tensorrt(tmp, profile)  # builds the plans into the bundle and records them in its manifest
        if sign_key is not None:  # last: the signature covers the final manifest bytes
            Bundle.open(tmp, trust=[signing.sign_bundle(tmp, sign_key)])  # and check it verifies
        commit(tmp, out)
    return out


def _zipped(run_path, out: Path, **options) -> Path:
    """Export into a temporary directory, zip it, and rename the zip into place."""
    import zipfile

    refuse_existing(out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        bundle = export_bundle(run_path, Path(tmp) / "bundle", **options)
        partial = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(bundle.iterdir()):
                z.write(f, f.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(partial), out)
    return out


#: largest difference one checked step may show: a ReLU or max-pool sitting within rounding error of its kink
#: takes the other branch in ONNX Runtime than in PyTorch (measured on Conv4: 1 step in ~10 differs by 3e-5 to
#: 5e-4 while the others agree to 3e-6); anything larger is a wrong graph
KINK_TOLERANCE = 1e-3


@dataclass
class Parity:
    """Relative differences between the runtime and PyTorch over every checked step and prediction."""

    worst: float
    median: float
    worst_at: str
    checked: int

    def failure(self, tolerance: float) -> str | None:
        """Why the bundle fails the check, or None: the median must be within ``tolerance`` and no single
        comparison beyond :data:`KINK_TOLERANCE`."""
        if self.median > tolerance or self.worst > max(tolerance, KINK_TOLERANCE):
            return (f"exported graphs differ from PyTorch by {self.worst:.2e} (relative, at {self.worst_at}; median "
                    f"{self.median:.2e} over {self.checked} comparisons, tolerance {tolerance:.0e})")
        return None


def parity(run: Run, bundle_dir: Path, tasks: int = 3) -> Parity:
    """Compare the runtime (ONNX Runtime) with the learner's own PyTorch functions on ``tasks`` sampled tasks.

    Each adapt step is checked from the same parameters on both sides (the runtime's step from its own previous
    parameters against PyTorch's step from those): over several steps a piecewise-linear network amplifies
    rounding differences, which says nothing about the graph. Steps are compared by what they do to the
    predictions (PyTorch's outputs on the task's queries at both results, max difference relative to the
    largest output), so directions the outputs do not depend on (ill-conditioned in a Gauss-Newton solve) do
    not count; the forward graph is compared at the parameters after the default and after 5 steps, and the
    unrolled graph (and ``adapt_predict.onnx``'s query outputs) with the chain of single steps.
    """
    from ..runtime.model import Model  # the runtime has no torch dependency; imported here to check it

    model = Model.load(bundle_dir, guard=False, backend="onnxruntime", trust=())  # not signed yet
    learner = run.learner
    batch = _check_tasks(run, tasks, 202)
    xs, ys, xq, _ = to_tensors(run.normalizer.batch(batch))
    results: list[tuple[float, str]] = []
    if model.prototypes:
        with torch.no_grad():
            ref = learner.predictions_after_steps(run.state, xs, ys, xq, [0])[0].numpy()
        for i in range(tasks):
            ours = model.adapt(batch.x_support[i], batch.y_support[i]).logits(batch.x_query[i])
            results.append((_relative_max(ours, ref[i]), f"task {i} prototype logits"))
        return _summary(results)
    fast, frozen = learner.split(run.state["params"])
    default = model.bundle.manifest.adaptation.inner_steps
    steps = max(default, 5)

    def unflatten(theta: np.ndarray) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(value.copy()) for name, value in model.layout.split(theta).items()}

    def outputs(theta: np.ndarray, i: int) -> np.ndarray:  # PyTorch's outputs on task i's queries at theta
        with torch.no_grad():
            return learner.inner.forward(unflatten(theta), frozen, xq[i]).numpy()

    for i in range(tasks):
        support = batch.x_support[i], batch.y_support[i]
        theta = model.theta0
        for j in range(steps):
            ours = model.adapt(*support, steps=1, start=theta).theta
            with torch.no_grad():
                new, _ = learner.inner.step(unflatten(theta), frozen, run.state["rates"], xs[i], ys[i])
            ref = torch.cat([new[n].reshape(-1) for n in fast]).numpy()
            results.append((_relative_max(outputs(ours, i), outputs(ref, i)), f"task {i} step {j + 1}"))
            theta = ours
            if j + 1 in (default, steps):
                ours_y = model.adapt(*support, steps=0, start=theta).logits(batch.x_query[i])
                results.append((_relative_max(ours_y, outputs(theta, i)), f"task {i} forward after {j + 1} steps"))
        if model.bundle.manifest.graphs.adapt_steps is not None:  # the unrolled graph against the chain of steps
            chain = model.theta0
            for _ in range(default):
                chain = model.adapt(*support, steps=1, start=chain).theta
            unrolled = model.adapt(*support, steps=default).theta
            results.append((_relative_max(outputs(unrolled, i), outputs(chain, i)),
                            f"task {i} unrolled {default} steps"))
            if model.bundle.manifest.graphs.adapt_predict is not None:  # the fused graph's query outputs too
                _, fused = model._adapt(*support, default, None, model._inputs(batch.x_query[i], "queries"))
                results.append((_relative_max(fused, outputs(chain, i)), f"task {i} adapt_predict {default} steps"))
    return _summary(results)


def native_parity(run: Run, bundle_dir: Path, tasks: int = 3) -> NativeParity:
    """The C library (``model.mebin``) against ONNX Runtime (or, for a C-only bundle, PyTorch): largest absolute
    difference of the raw outputs (standardised predictions or logits) after the default steps, unguarded, and the
    same divided by the outputs' scale where that exceeds 1 (ProtoNet logits are squared distances in the hundreds,
    whose float32 rounding alone exceeds 1e-5 absolute); the check bounds the scaled one."""
    from ..runtime.model import Model

    native = Model.load(bundle_dir, guard=False, backend="native", trust=())  # not signed yet
    onnx = native.bundle.manifest.has_graphs
    reference = Model.load(bundle_dir, guard=False, backend="onnxruntime", trust=()) if onnx else None
    batch = _check_tasks(run, tasks, 303)
    steps = native.bundle.manifest.adaptation.inner_steps
    if reference is None:
        xs, ys, xq, _ = to_tensors(run.normalizer.batch(batch))
        with torch.no_grad():
            torch_out = run.learner.predictions_after_steps(run.state, xs, ys, xq, [steps])[steps].numpy()
    worst, scaled, where = 0.0, 0.0, ""
    for i in range(tasks):
        ours = native.adapt(batch.x_support[i], batch.y_support[i]).logits(batch.x_query[i])
        ref = (reference.adapt(batch.x_support[i], batch.y_support[i]).logits(batch.x_query[i]) if reference
               else torch_out[i])
        diff = float(np.abs(ours - ref).max())
        relative = diff / max(1.0, float(np.abs(ref).max()))
        worst = max(worst, diff)
        if relative >= scaled:
            scaled, where = relative, f"task {i}"
    return NativeParity(max_abs_difference=worst, max_scaled_difference=scaled, worst_at=where, steps=steps,
                        tasks=tasks, reference="ONNX Runtime" if reference else "PyTorch")


def _check_tasks(run: Run, tasks: int, seed_offset: int) -> TaskBatch:
    """``tasks`` sampled tasks of the run's family for a parity check (queries: 5 per class, or 20 points)."""
    fam = run.family
    queries = 5 if fam.task_kind == "classification" else 20
    return fam.sample_batch(task_rng(run.config.seed + seed_offset, 0), tasks, run.config.shots, queries,
                            **sample_options(run.config, fam))


def _relative_max(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max()) / max(float(np.abs(ref).max()), 1e-6)


def _summary(results: list[tuple[float, str]]) -> Parity:
    worst, where = max(results)
    return Parity(worst, float(np.median([r for r, _ in results])), where, len(results))
