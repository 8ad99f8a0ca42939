"""The ``metaedge`` command line: one click group, small commands.

Server-side commands import ``metaedge.sdk`` (and so torch) lazily inside the command, so
``metaedge --help`` stays fast and device-side commands never load torch.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import InputError, MetaedgeError
from .update_cli import register_update_command

#: exit status of a bug (an exception that is not a :class:`MetaedgeError`): EX_SOFTWARE of sysexits.h
BUG_EXIT = 70
BUG_REPORT = ("This is a bug in metaedge {version}, not a problem with your input: please report it with the "
              "command you ran and the traceback above.")


#: optional packages -> the extra that installs them: a command that needs a missing one says so in one line
OPTIONAL_PACKAGES = {"torch": "train", "onnx": "train", "onnxscript": "train", "safetensors": "train",
                     "matplotlib": "train", "PIL": "train", "onnxruntime": "runtime", "sqlalchemy": "kb",
                     "alembic": "kb", "psycopg": "kb"}


class Group(click.Group):
    """A click group with the project's error policy.

    A :class:`~metaedge.errors.MetaedgeError` (bad input: wrong shapes, NaN, a corrupt bundle, a missing file)
    becomes its one-sentence message and exit status 1. Any other exception is a bug: its traceback is shown,
    followed by one line asking for a bug report, and the exit status is :data:`BUG_EXIT`.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            package = (e.name or "").split(".")[0]
            if package not in OPTIONAL_PACKAGES:  # a module of ours or a required dependency: a broken install
                _report_bug(ctx)
            raise click.ClickException(f"`metaedge {ctx.invoked_subcommand}` needs {package}, which is not installed "
                                       f"here; install it with pip install 'metaedge[{OPTIONAL_PACKAGES[package]}]'"
                                       ) from e
        except MetaedgeError as e:
            raise click.ClickException(str(e)) from e
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception:
            _report_bug(ctx)


def _report_bug(ctx: click.Context) -> None:
    """Print the exception being handled with its traceback and the bug-report line, and exit with BUG_EXIT."""
    traceback.print_exc()
    click.echo(BUG_REPORT.format(version=__version__), err=True)
    ctx.exit(BUG_EXIT)


class RegistryChoice(click.Choice):
    """A choice among the names a registry holds when the option is parsed or shown, so that a learner or model
    a user registers is selectable; read lazily, since the registries import torch and ``metaedge --help`` and
    the device-side commands must not."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ assigns; the registry is the source
        pass


def _algorithms() -> list[str]:
    from .sdk.learners import algorithm_names

    return algorithm_names()


def _models() -> list[str]:
    from .sdk.models import model_kinds

    return ["auto", *model_kinds()]


def _activations() -> list[str]:
    from .sdk.models import ACTIVATIONS

    return sorted(ACTIVATIONS)


def _formats() -> tuple[str, ...]:
    from .export.bundle import FORMATS

    return FORMATS


def _backends() -> tuple[str, ...]:
    from .runtime.model import backend_choices

    return backend_choices()


def device_option(f):
    """``--device auto|NAME`` and ``--backend`` for the device-side commands."""
    f = click.option("--backend", type=RegistryChoice(_backends), default="auto", show_default=True,
                     help="Runtime backend; auto: the device profile's first usable one.")(f)
    return click.option("--device", default="auto", show_default=True,
                        help="Device profile (`metaedge devices` lists them); auto detects this machine.")(f)


def trust_option(f):
    """``--trust KEY.pub`` (repeatable) for the commands that open a bundle."""
    return click.option("--trust", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="KEY.pub",
                        help="Accept only bundles signed by this public key (`metaedge keygen`); repeatable. "
                             "[the keys in METAEDGE_TRUST; none: unsigned bundles run]")(f)


def _load_model(bundle: Path, device: str, backend: str, guard: bool = True, trust: tuple[Path, ...] = ()):
    """``Model.load`` with the backend choice (one line) shown on stderr; ``trust`` empty: METAEDGE_TRUST's keys."""
    import logging

    from .runtime.model import Model

    logger = logging.getLogger("metaedge.runtime")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return Model.load(bundle, guard=guard, backend=backend, device=device, trust=trust or None)
    finally:
        logger.removeHandler(handler)


def _int_list(value: str | None, name: str) -> list[int] | None:
    if value is None:
        return None
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        message = f"expected comma-separated integers such as 0,1,5, got {value!r}"
        raise click.BadParameter(message, param_hint=name) from None
    if any(v < 0 for v in items):
        raise click.BadParameter(f"values must be non-negative, got {value!r}", param_hint=name)
    return items


def _read_config(path: Path) -> dict[str, Any]:
    """A run config from JSON or TOML (same keys as the command-line options, with underscores)."""
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path} is not valid TOML ({e}); fix the file") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e}); fix the file") from e
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object of training options")
    return data


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metaedge")
def main() -> None:
    """Meta-train few-shot adaptation on a server, export it, adapt on devices.

    \b
    Typical flow:
      metaedge train --family sensor-ntc --algo metasgd --shots 3 --out runs/ntc
      metaedge eval runs/ntc --shots 3 --baseline-shots 10
    """


@main.command()
def families() -> None:
    """List the registered task families and what they map from and to."""
    from .sdk.tasks import family_names, make_family

    for name in family_names():
        try:
            fam = make_family(name)
        except (MetaedgeError, TypeError) as e:  # needs data (a missing folder) or options (a missing argument)
            click.echo(f"{name:18s} (needs options or data: {str(e).splitlines()[0][:80]})")
            continue
        ins = ", ".join(f"{n} [{u}]" if u else n for n, u in zip(fam.input_names, fam.input_units))
        outs = ", ".join(f"{n} [{u}]" if u else n for n, u in zip(fam.output_names, fam.output_units))
        click.echo(f"{name:18s} {fam.task_kind:14s} {ins} -> {outs}")


@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON or TOML file with the same keys as these options; options given here override it.")
@click.option("--family", help="Task family (see `metaedge families`). [default: sinusoid]")
@click.option("--family-option", "family_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the family, e.g. path=data.csv or fold=2; repeatable. Values are parsed as JSON "
                   "when possible.")
@click.option("--algo", type=RegistryChoice(_algorithms), help="Meta-learner (registered learners). [default: maml]")
@click.option("--shots", type=int, help="Support points per task (per class for classification). [default: 10]")
@click.option("--ways", type=int, help="Classes per episode for classification families. [family's default]")
@click.option("--model", type=RegistryChoice(_models),
              help="Network: auto picks mlp for features, conv4 for images, conv1d for time series. [auto]")
@click.option("--width", type=int, help="Channels per conv block. [default: 64]")
@click.option("--norm", type=click.Choice(["batch", "group", "none"]), help="Conv normalisation. [default: batch]")
@click.option("--queries", type=int, help="Query points per task. [default: 10]")
@click.option("--inner-steps", type=int, help="Inner-loop steps during meta-training. [default: 1]")
@click.option("--inner-lr", type=float, help="Inner-loop step size (initial value for metasgd). [default: 0.01]")
@click.option("--meta-lr", type=float, help="Adam step size of the outer loop. [default: 0.001]")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]),
              help="Outer step size over the run. [default: constant]")
@click.option("--meta-batch", type=int, help="Tasks per meta-iteration. [default: 25]")
@click.option("--iterations", type=int, help="Meta-iterations in total (a resumed run continues to this). [1000]")
@click.option("--hidden", help="Hidden layer widths, comma-separated. [default: 40,40]")
@click.option("--activation", type=RegistryChoice(_activations),
              help="Hidden activation. [default: relu]")
@click.option("--skip/--no-skip", default=None, help="Add a linear input->output path to the MLP. [no-skip]")
@click.option("--adapt", help="Which parameters adapt: all, head, biases or glob patterns. [all; head for anil]")
@click.option("--seed", type=int, help="Seed for initialisation and task sampling. [default: 0]")
@click.option("--device", help="torch device, e.g. cpu or cuda. [default: cpu]")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="How to compute the meta-gradient. Default: the fastest correct path (hand-derived batched "
                   "passes for MAML/FOMAML/Meta-SGD/ANIL/Reptile on MLPs, else eager autograd). --compile: "
                   "torch.compile the autograd path (15-40 s compile); --no-compile: eager autograd.")
@click.option("--threads", type=int, help="CPU threads for torch (0 = torch's default). [default: 1]")
@click.option("--init-from", metavar="RUN", help="Start from this run's meta-parameters and normaliser (same "
              "architecture), e.g. a champion being updated. [a fresh initialisation]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train(config_path: Path | None, family_options: tuple[str, ...], out: Path, resume: bool, progress: bool,
          **options: Any) -> None:
    """Meta-train a model; writes config.json, model.safetensors and metrics.jsonl to --out.

    Runs under `torchrun --nproc-per-node N metaedge train ...` unchanged: each rank takes a shard of
    every meta-batch and the meta-gradient is all-reduced.
    """
    from .sdk.checkpoint import read_json
    from .sdk.config import TrainConfig
    from .sdk.run import RunRecord
    from .sdk.train import train as run_training

    data: dict[str, Any] = _read_config(config_path) if config_path else {}
    if resume and not config_path and (out / "config.json").is_file():
        data = RunRecord.parse(read_json(out / "config.json"), out / "config.json").train.to_dict()
    options["compile"] = options.pop("compile_")
    for key, value in options.items():
        if value is not None:
            data[key] = value
    if isinstance(data.get("hidden"), str):
        data["hidden"] = _int_list(data["hidden"], "--hidden")
    for item in family_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--family-option")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        data.setdefault("family_options", {})[key] = parsed
    config = TrainConfig.from_dict(data)
    path = run_training(config, out, resume=resume, progress=progress)
    click.echo(f"run written to {path}")


@main.command(name="eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--tasks", "--episodes", "tasks", default=1000, show_default=True,
              help="Held-out tasks (episodes) per setting.")
@click.option("--shots", default="5", show_default=True, help="Support points (per class), comma-separated: 1,5.")
@click.option("--ways", default="", help="Classification: classes per episode, comma-separated: 5,20. [run's ways]")
@click.option("--queries", type=int, help="Query points per task (per class for classification). [100 / 15]")
@click.option("--steps", default="0,1,5,10", show_default=True, help="Inner-step counts to report.")
@click.option("--baseline-shots", default="", help="Extra support sizes for classic calibration, e.g. 10.")
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="Evaluate the baselines too.")
@click.option("--pretrain-steps", default=2000, show_default=True, help="Adam steps of the transfer baseline.")
@click.option("--split", help="Split to draw held-out tasks from. [the family's evaluation split]")
@click.option("--seed", default=1234, show_default=True, help="Seed for the held-out tasks.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write report.json, report.md and PNG plots to this directory.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--interval", type=float,
              help="Regression: the meta-learned rows at the run's steps gain coverage and interval_width of the "
                   "runtime's intervals at this level (e.g. 0.95).")
@click.option("--selection", type=int,
              help="Regression: also the point-selection curve up to this many reference points (guided, random, "
                   "best classic; each task a pool of 40 settable points).")
@click.option("--selection-tasks", default=100, show_default=True, help="Held-out tasks of the selection curve.")
@click.option("--bundle", type=click.Path(path_type=Path),
              help="Bundle of the run whose intervals --interval (and guided points --selection) measure. "
                   "[exported to a temporary folder]")
def evaluate(run: Path, tasks: int, shots: str, ways: str, queries: int | None, steps: str, baseline_shots: str,
             baselines: bool, pretrain_steps: int, split: str | None, seed: int, as_json: bool,
             report_dir: Path | None, progress: bool, interval: float | None, selection: int | None,
             selection_tasks: int, bundle: Path | None) -> None:
    """Evaluate a run on held-out tasks: mean and 95% CI per setting and step count, beside baselines."""
    import tempfile

    from .sdk.evaluate import EvalSettings, format_table
    from .sdk.evaluate import evaluate as run_evaluation
    from .sdk.run import Run

    settings = EvalSettings(
        tasks=tasks, shots=_int_list(shots, "--shots") or [5], ways=_int_list(ways, "--ways") or [],
        queries=queries, steps=_int_list(steps, "--steps") or [0],
        baseline_shots=_int_list(baseline_shots, "--baseline-shots") or [], baselines=baselines,
        pretrain_steps=pretrain_steps, split=split, seed=seed,
    )
    if selection is not None and selection_tasks < 1:
        raise click.UsageError(f"--selection-tasks must be at least 1, got {selection_tasks}")
    with tempfile.TemporaryDirectory() as tmp:
        intervals = None
        if (interval is not None or selection is not None) and bundle is None:
            from .export.bundle import export_bundle

            bundle = export_bundle(run, Path(tmp) / "bundle", check=False)
        if interval is not None:
            from .export.uncertainty import interval_metrics

            intervals = interval_metrics(bundle, interval)
        loaded = Run.load(run)
        report = run_evaluation(loaded, settings, progress=progress, intervals=intervals)
        if selection is not None:
            from .runtime.model import Model
            from .selection import selection_curve

            report["selection"] = selection_curve(Model.load(bundle), loaded.family, selection_tasks, selection,
                                                  split=settings.split or loaded.family.eval_split,
                                                  seed=seed).to_json()
    if report_dir is not None:
        from .sdk.evaluate.report import write_report

        write_report(report, report_dir, loaded.family)
    click.echo(json.dumps(report, indent=2) if as_json else format_table(report))
    if report_dir is not None:
        click.echo(f"report written to {report_dir}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Bundle directory to write, or a .zip of it.")
@click.option("--opset", default=18, show_default=True, help="ONNX opset of the graphs.")
@click.option("--inner-steps", type=int, help="Default adaptation steps on the device, also exported unrolled into "
              "one graph. [the run's]")
@click.option("--adapt", "adapt_spec", help="Which parameters the device adapts: all, head, biases, or comma-separated "
              "name patterns such as 'head.*,body.2.bias'. [the run's]")
@click.option("--format", "formats", type=RegistryChoice(_formats), default="auto",
              show_default=True, help="onnx: graphs for ONNX Runtime (and TensorRT); c: model.mebin + model_data.h "
              "for the C library (MLPs); all: both; auto: all where the C library supports the model, else onnx; "
              "tensorrt: the graphs plus TensorRT engines for --device (needs TensorRT: build on the device).")
@click.option("--device", help="Device profile the TensorRT engines are built for (with --format tensorrt).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Prove forward and adapt-step parity with PyTorch (1e-5 relative) before writing.")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
              help="Sign manifest.json with this Ed25519 private key (`metaedge keygen KEY`) into manifest.sig.")
def export(run: Path, out: Path, opset: int, inner_steps: int | None, adapt_spec: str | None, formats: str,
           device: str | None, check: bool, sign_key: Path | None) -> None:
    """Export a meta-trained run to a bundle: manifest.json, forward.onnx, adapt_step.onnx (gauss_newton.onnx for
    ridge runs), theta0/rates .npy, and with --format c|all the C library's model.mebin."""
    from .export.bundle import export_bundle

    path = export_bundle(run, out, opset=opset, check=check, inner_steps=inner_steps, adapt=adapt_spec,
                         formats=formats, device=device, sign_key=sign_key)
    from .runtime.bundle import Bundle

    manifest = Bundle.open(path, trust=()).manifest  # export verified the signature it wrote
    parity = manifest.parity
    checked = (f" (parity with PyTorch: median {parity.median_relative_difference:.1e}, max "
               f"{parity.max_relative_difference:.1e} relative over {parity.comparisons} steps and predictions)"
               if parity else "")
    click.echo(f"bundle written to {path}{checked}")
    if sign_key is not None:
        from .runtime.signing import public_key_of

        click.echo(f"  signed with {sign_key} (manifest.sig, key id {public_key_of(sign_key).key_id})")
    if manifest.native_parity:
        native = manifest.native_parity
        click.echo(f"  model.mebin: C library vs {native.reference} {native.max_scaled_difference:.1e} "
                   f"(absolute, relative where outputs exceed 1) after {native.steps} steps")
    if manifest.firmware_skipped:
        click.echo(f"  no C format: {manifest.firmware_skipped}")
    for graph, info in manifest.ops.items():
        outside = info.outside_tensorrt
        click.echo(f"  {graph}: {len(info.ops)} operator types"
                   + (f"; outside TensorRT's set: {', '.join(outside)}" if outside else "; all within TensorRT's set"))


@main.command()
@click.argument("key", type=click.Path(dir_okay=False, path_type=Path))
def keygen(key: Path) -> None:
    """Write a new Ed25519 signing key to KEY (mode 0600) and its public key to KEY.pub; never overwrites.

    \b
    Sign bundles with `metaedge export RUN -o B --sign KEY`; devices accept only bundles signed by the keys
    passed with --trust KEY.pub or listed in METAEDGE_TRUST. Keep KEY secret.
    """
    from .runtime.signing import generate_key

    public = generate_key(key)
    click.echo(f"private key written to {key} (keep it secret); public key to {public.source} (key id "
               f"{public.key_id})")


@main.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              help="Filesystem root to detect from (for checking another machine's files).")
def devices(root: Path) -> None:
    """List the device profiles and mark the one this machine matches (with what detection read)."""
    from .devices import detect, format_profiles, load_profiles

    profiles = load_profiles()
    click.echo(format_profiles(profiles, detect(root, profiles=profiles)))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--support", required=True, type=click.Path(path_type=Path),
              help="CSV with the bundle's input and output columns: the reference points.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Adapted state to write.")
@click.option("--steps", type=int, help="Adaptation steps. [the bundle's inner steps]")
@click.option("--start", "start_state", type=click.Path(dir_okay=False, path_type=Path), metavar="STATE",
              help="Continue from this unit's earlier state (a recalibration). [the meta-learned initial parameters]")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Append the adaptation's record to this journal (*.jsonl: JSON Lines, else SQLite); needs --unit.")
@click.option("--unit", help="The unit's id in the journal (serial number).")
@device_option
@trust_option
def adapt(bundle: Path, support: Path, out: Path, steps: int | None, start_state: Path | None,
          journal: Path | None, unit: str | None, device: str, backend: str, trust: tuple[Path, ...]) -> None:
    """Adapt a bundle to one unit from its support CSV (device side: no torch needed).

    With --journal FILE --unit ID the state is written first, then one record (support points, steps, support
    losses, the state's sha256, the bundle's identity) is appended to FILE: docs/journal.md.
    """
    from .runtime.model import Adapted
    from .runtime.tables import read_columns

    if journal is not None and not unit:
        raise click.UsageError("--journal needs --unit ID: the id of the unit being calibrated")
    model = _load_model(bundle, device, backend, trust=trust)
    m = model.bundle.manifest
    xs = read_columns(support, m.input.names)
    ys = read_columns(support, m.output.names)
    start = Adapted.load(model, start_state) if start_state else None
    adapted = model.adapt(xs, ys, steps=steps, start=start, save=out, journal=journal, unit=unit)
    click.echo(f"adapted on {len(xs)} samples: {adapted.steps_kept} of {adapted.steps_run} steps kept; "
               f"state written to {out}" + (f"; journaled to {journal} (unit {unit})" if journal else ""))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--candidates", required=True, type=click.Path(path_type=Path),
              help="CSV with the bundle's input columns: the points the technician can set (e.g. a grid).")
@click.option("--target", type=float, help="Stop once the largest 95% half-width over the candidates is below this "
              "(output units). [none: run to --max-points]")
@click.option("--max-points", default=8, show_default=True,
              help="Reference points at most; without --target all of them, planned together as one design.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Adapted state to write.")
@click.option("--from", "replay", type=click.Path(path_type=Path), metavar="CSV",
              help="Replay readings from this CSV (input and output columns; rows matched to the suggested "
              "candidate by their input values) instead of prompting.")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Append the final adaptation's record to this journal; needs --unit.")
@click.option("--unit", help="The unit's id in the journal (serial number).")
@device_option
@trust_option
def calibrate(bundle: Path, candidates: Path, target: float | None, max_points: int, out: Path, replay: Path | None,
              journal: Path | None, unit: str | None, device: str, backend: str, trust: tuple[Path, ...]) -> None:
    """Guided calibration of one unit: the bundle suggests each reference point among the candidates, asks for
    the reading there (or replays --from), adapts on every point so far and shows the 95% half-width over the
    candidates, until it is below --target or at --max-points; then writes the state (docs/calibrate-session.md)."""
    from .calibrate import calibrate as run_calibration
    from .runtime.journal import unit_id

    if journal is not None and not unit:
        raise click.UsageError("--journal needs --unit ID: the id of the unit being calibrated")
    if journal is not None:
        unit = unit_id(unit)  # refused before the technician takes any reading
    run_calibration(_load_model(bundle, device, backend, trust=trust), candidates, out, target, max_points,
                    replay=replay, journal=journal, unit=unit)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--state", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The unit's adapted state from `metaedge adapt`.")
@click.option("--reference", required=True, type=click.Path(path_type=Path),
              help="CSV with the bundle's input and output columns: in-service reference readings.")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Append the check's record to this journal (*.jsonl: JSON Lines, else SQLite); needs --unit.")
@click.option("--unit", help="The unit's id in the journal (the one its adaptation was journaled under).")
@device_option
@trust_option
def check(bundle: Path, state: Path, reference: Path, journal: Path | None, unit: str | None, device: str,
          backend: str, trust: tuple[Path, ...]) -> None:
    """Compare a unit's predictions with in-service reference readings: a table of reference, prediction and
    error per reading and output, and the RMSE; with --journal the readings and predictions are journaled."""
    from .runtime.model import Adapted
    from .runtime.tables import read_columns

    if journal is not None and not unit:
        raise click.UsageError("--journal needs --unit ID: the id the unit's adaptation was journaled under")
    model = _load_model(bundle, device, backend, trust=trust)
    m = model.bundle.manifest
    adapted = Adapted.load(model, state)
    readings = read_columns(reference, [*m.input.names, *m.output.names])  # one sentence names every missing column
    n_in = len(m.input.names)
    record = adapted.check(readings[:, :n_in], readings[:, n_in:], journal=journal, unit=unit)
    click.echo(format_check(m.input.names, m.output.names, record))
    if journal is not None:
        click.echo(f"journaled to {journal} (unit {unit})")


def format_check(inputs, outputs, record) -> str:
    """The check table: one row per reading, the inputs then reference / predicted / error for each output, and
    the RMSE of each output."""
    import numpy as np

    x, ref, pred = (np.asarray(a, np.float64) for a in (record.x, record.reference, record.predicted))
    head = [*inputs] + [f"{o} {w}" for o in outputs for w in ("ref", "pred", "error")]
    rows = [[f"{v:.6g}" for v in xi] + [f"{v:.6g}" for j in range(len(outputs))
                                        for v in (ri[j], pi[j], pi[j] - ri[j])]
            for xi, ri, pi in zip(x, ref, pred)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    rmse = np.sqrt(np.mean((pred - ref) ** 2, axis=0))
    lines.append(f"RMSE over {len(x)} readings: " + ", ".join(f"{o} {v:.6g}" for o, v in zip(outputs, rmse)))
    return "\n".join(lines)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
              help="Adapted state from `metaedge adapt`. [the meta-learned initial parameters]")
@click.option("--input", "input_csv", required=True, type=click.Path(path_type=Path),
              help="CSV with the bundle's input columns.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write predictions here. [stdout]")
@click.option("--interval", type=float,
              help="Also write the central predictive interval at this level (e.g. 0.95) as <name>_lower and "
                   "<name>_upper columns (regression; needs --support).")
@click.option("--support", type=click.Path(path_type=Path),
              help="Support CSV the unit was adapted on (inputs and outputs); without --state it is adapted on "
                   "here. Intervals need it: a state file holds parameters only.")
@device_option
@trust_option
def predict(bundle: Path, state: Path | None, input_csv: Path, out: Path | None, interval: float | None,
            support: Path | None, device: str, backend: str, trust: tuple[Path, ...]) -> None:
    """Predict with an adapted state (device side: no torch needed)."""
    import numpy as np

    from .runtime.model import Adapted
    from .runtime.tables import read_columns, write_columns

    if interval is not None and support is None:
        raise click.UsageError("--interval needs --support CSV (the reference points the unit was adapted on)")
    model = _load_model(bundle, device, backend, trust=trust)
    m = model.bundle.manifest
    points = (read_columns(support, m.input.names), read_columns(support, m.output.names)) if support else None
    if state:
        adapted = Adapted.load(model, state, support=points)
    else:
        adapted = model.adapt(*points) if points else Adapted(model, model.theta0)
    x = read_columns(input_csv, m.input.names)
    if interval is None:
        text = write_columns(out, m.output.names, adapted.predict(x))
    else:
        iv = adapted.predict(x, interval=interval)
        names = [f"{n}{end}" for n in m.output.names for end in ("", "_lower", "_upper")]
        values = np.stack([iv.prediction, iv.lower, iv.upper], axis=-1).reshape(len(x), -1)
        text = write_columns(out, names, values)
    click.echo(f"predictions written to {out}" if out else text.rstrip("\n"))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--shots", default=10, show_default=True, help="Support samples per adaptation.")
@click.option("--steps", type=int, help="Adaptation steps. [the bundle's inner steps]")
@click.option("--predict", "predict_n", default=100, show_default=True, help="Inputs per prediction call.")
@click.option("--repeats", default=200, show_default=True, help="Timed repetitions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@device_option
@trust_option
def bench(bundle: Path, shots: int, steps: int | None, predict_n: int, repeats: int, as_json: bool, device: str,
          backend: str, trust: tuple[Path, ...]) -> None:
    """Adaptation and prediction latency percentiles (ms) and peak memory of the runtime on this machine."""
    from .runtime.bench import bench as run_bench

    model = _load_model(bundle, device, backend, trust=trust)
    result = run_bench(model, shots=shots, steps=steps, predict_n=predict_n, repeats=repeats)
    result = {"device": model.device, "backend": model.backend, **result}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{model.backend} backend on {model.device or 'this machine'}: {shots} shots, {result['steps']} steps, "
               f"predict {predict_n}; {repeats} repeats")
    for what in ("adapt_ms", "predict_ms"):
        click.echo(f"{what[:-3]:8s} " + "  ".join(f"{k} {v:.3f} ms" for k, v in result[what].items()))
    click.echo(f"peak RSS {result['peak_rss_mib']:.1f} MiB")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--episodes", default=20, show_default=True, help="New simulated units, one episode each.")
@click.option("--steps", type=int, help="Control steps per episode. [the family's episode length]")
@click.option("--seed", default=0, show_default=True, help="Seed of the units, start states and process noise.")
@click.option("--explore", type=int, help="Steps of each unit's commissioning run (smoothed random actions) "
              "before its episode; 0 starts the adapted controller cold. [the bundle's window M]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Draw the first unit's states and actions under the three controllers.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@device_option
@trust_option
def control(bundle: Path, episodes: int, steps: int | None, seed: int, explore: int | None, as_json: bool,
            plot: Path | None, progress: bool, device: str, backend: str, trust: tuple[Path, ...]) -> None:
    """Closed-loop episodes of a dynamics bundle on new simulated units of its family, each after a commissioning
    run of --explore steps: mean return (95% CI) of the adapted controller (adapted on the commissioning run, then
    re-adapting from its last transitions), the meta-model's (never adapted) and the
    oracle's (the planner on the true dynamics), and gap_closed = (adapted - meta) / (oracle - meta)
    (docs/control.md)."""
    from .control_cli import dynamics_family, evaluate_control, plot_trajectories
    from .sdk.progress import progress as progress_bar

    model = _load_model(bundle, device, backend, trust=trust)
    family = dynamics_family(model)  # refuses a bundle without a control part before any episode runs
    if plot is not None and plot.suffix.lower() != ".png":
        raise click.BadParameter(f"the plot is written as PNG, so its name must end in .png, got {plot}",
                                 param_hint="--plot")
    bar = progress_bar(total=episodes, enabled=progress and not as_json, desc="episodes",
                       unit="unit")
    report = evaluate_control(model, episodes=episodes, steps=steps, seed=seed, explore=explore,
                              on_episode=lambda i: bar.update(1))
    bar.close()
    if plot is not None:
        system = family.system
        plot_trajectories(report, system.state_names, system.state_units, system.action_names, plot)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.table())
        if plot is not None:
            click.echo(f"trajectory plot written to {plot}")


# --- the knowledge base: `metaedge kb ...` (server side; metaedge.knowledge) -----------------------------------

def db_option(f):
    return click.option("--db", "db", metavar="URL",
                        help="Knowledge base: sqlite:///kb.db or postgresql://user@host/db. [$METAEDGE_KB, else "
                             "sqlite:///kb.db in the current folder]")(f)


def _kb(db: str | None):
    from .knowledge import KnowledgeBase

    return KnowledgeBase(db)


@main.group(cls=Group)
def kb() -> None:
    """The knowledge base: journals ingested, lineage, fleet units as a table (see docs/knowledge.md)."""


@kb.command(name="init")
@db_option
def kb_init(db: str | None) -> None:
    """Create the knowledge base, or upgrade its schema to this metaedge's."""
    from .knowledge import KnowledgeBase

    with KnowledgeBase.init(db) as base:
        click.echo(f"knowledge base ready at {base.engine.url.render_as_string(hide_password=True)}")


@kb.command(name="register")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--alias", help="Also point this alias (champion, candidate) at the bundle.")
@db_option
def kb_register(path: Path, alias: str | None, db: str | None) -> None:
    """Register a run directory (config and data hashes) or a bundle (directory or zip; its run too, if here)."""
    is_run = path.is_dir() and (path / "config.json").is_file() and not (path / "manifest.json").exists()
    with _kb(db) as base:
        if is_run:
            if alias:
                raise InputError("--alias names bundles; register the run without it, then its bundle with --alias")
            click.echo(f"run {base.register_run(path)} registered from {path}")
            return
        bundle_id = base.register_bundle(path, alias=alias)
        info = base.bundle(bundle_id)
        click.echo(f"bundle {bundle_id} registered from {path}" + (f" as {alias}" if alias else "")
                   + (f"; run {info.run_id}" if info.run_id else f"; its run {info.run_path} is not registered"))


@kb.command(name="ingest")
@click.argument("journals", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
def kb_ingest(journals: tuple[Path, ...], db: str | None) -> None:
    """Store journal records (SQLite or JSON Lines journals); one transaction per file, duplicates skipped."""
    with _kb(db) as base:
        result = base.ingest(*journals)
    for f in result.files:
        torn = f", {f.torn_lines} torn last line skipped (an append cut short on the device)" if f.torn_lines else ""
        click.echo(f"{f.path}: {f.added} added, {f.duplicates} duplicates{torn}")
    if len(result.files) > 1:
        click.echo(f"total: {result.added} added, {result.duplicates} duplicates")


@kb.command(name="units")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@db_option
def kb_units(as_json: bool, db: str | None) -> None:
    """Every unit: adaptations, checks, latest record, latest bundle."""
    from .kb_text import units_text

    with _kb(db) as base:
        units = base.units()
    click.echo(json.dumps([u.to_dict() for u in units], indent=2) if as_json else units_text(units))


@kb.command(name="show")
@click.argument("unit")
@click.option("--json", "as_json", is_flag=True, help="Print the unit with its adaptations and checks as JSON.")
@db_option
def kb_show(unit: str, as_json: bool, db: str | None) -> None:
    """One unit: every adaptation (support points, losses, state) and check."""
    from .kb_text import unit_text

    with _kb(db) as base:
        detail = base.unit(unit)
    click.echo(json.dumps(detail.to_dict(), indent=2) if as_json else unit_text(detail))


@kb.command(name="lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def kb_lineage(ref: str, as_json: bool, db: str | None) -> None:
    """unit -> adaptations -> bundle -> run -> data hashes (REF a unit), or bundle -> run -> data (REF a bundle
    alias, id or id prefix)."""
    from .kb_text import lineage_text

    with _kb(db) as base:
        line = base.lineage(ref)
    click.echo(json.dumps(line.to_dict(), indent=2) if as_json else lineage_text(line))


@kb.command(name="export-units")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV to write.")
@click.option("--bundle", "bundle_ref", help="Only the records of this bundle (alias, id or prefix). [all records]")
@click.option("--min-points", default=1, show_default=True, help="Leave out units with fewer reference points.")
@db_option
def kb_export_units(out: Path, bundle_ref: str | None, min_points: int, db: str | None) -> None:
    """The fleet as a per-unit table (unit, inputs, outputs) for `--family table`."""
    with _kb(db) as base:
        path = base.export_units(out, bundle=bundle_ref, min_points=min_points)
    import csv

    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    click.echo(f"{len(rows)} points of {len({r[0] for r in rows})} units written to {path} (columns "
               f"{', '.join(header)}); train on it with --family table --family-option path={path} "
               "--family-option group=unit and the input and target columns")


@kb.command(name="alerts")
@click.option("--detector", type=click.Choice(["cusum", "page-hinkley", "threshold"]), default="cusum",
              show_default=True, help="Change detector over each unit's check residuals (docs/knowledge.md).")
@click.option("--warmup", default=8, show_default=True,
              help="First checks after each calibration that estimate the unit's residual scale.")
@click.option("--scale", type=float, help="Residual scale in the output's unit for every unit. [estimated]")
@click.option("--threshold", "limit", type=float,
              help="Alarm threshold in scale units: CUSUM h, Page-Hinkley lambda, the rule's k. [5, 5, 3]")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts and their evidence as JSON.")
@db_option
def kb_alerts(detector: str, warmup: int, scale: float | None, limit: float | None, as_json: bool,
              db: str | None) -> None:
    """Units due for recalibration: a sequential change detector over each unit's in-service check residuals
    since its latest calibration; new alarms are stored with their evidence (a rescan adds nothing)."""
    from .drift_text import alert_dict, alerts_text
    from .knowledge.alerts import scan

    with _kb(db) as base:
        found = scan(base, detector=detector, warmup=warmup, scale=scale, limit=limit)
        checked = sum(1 for u in base.units() if u.n_checks)
    click.echo(json.dumps([alert_dict(a) for a in found], indent=2) if as_json
               else alerts_text(found, detector, checked))


@kb.command(name="certificate")
@click.argument("unit")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write.")
@trust_option
@db_option
def kb_certificate(unit: str, out: Path, trust: tuple[Path, ...], db: str | None) -> None:
    """A calibration certificate of UNIT's latest calibration as one self-contained HTML page: reference points,
    errors before (the bundle's prior) and after adjustment, bundle/run/signing-key identity, dates, checks."""
    from .knowledge.certificate import build_certificate, write_certificate

    with _kb(db) as base:
        cert = build_certificate(base, unit, trust=trust or None)
    path = write_certificate(cert, out)
    eb, ea = (float((e**2).mean() ** 0.5) for e in (cert.error_before, cert.error_after))
    click.echo(f"certificate of unit {unit} written to {path}: {len(cert.points)} reference points, RMS error "
               f"{eb:.4g} before and {ea:.4g} after adjustment, {len(cert.checks)} in-service check reading(s)")


register_update_command(kb)


# --- meta-RL: policies (docs/meta-rl.md) ---------------------------------------------------------------------------

@main.command(name="rl-train")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON/TOML of RLConfig keys, e.g. configs/nav2d-maml.json.")
@click.option("--family", type=click.Choice(["nav2d", "pendulum"]), help="Task family. [default: nav2d]")
@click.option("--mode", type=click.Choice(["maml", "pretrain"]),
              help="maml: meta-train (MAML-TRPO); pretrain: one policy on all tasks, no adaptation. [maml]")
@click.option("--iterations", type=int, help="Meta-iterations (a resumed run continues to this). [100]")
@click.option("--seed", type=int, help="Seed of initialisation, tasks and noise. [0]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def rl_train(config_path: Path | None, out: Path, resume: bool, **options: Any) -> None:
    """Meta-train a Gaussian MLP policy with MAML (policy-gradient inner step, TRPO outer step) on a family of
    tasks; writes config.json, model.safetensors, state.json and metrics.jsonl to --out."""
    from .sdk.rl.train import RLConfig
    from .sdk.rl.train import train as train_policy

    data: dict[str, Any] = _read_config(config_path) if config_path else {}
    data.update({k: v for k, v in options.items() if v is not None})
    config = RLConfig.from_dict(data)

    def show(record: dict[str, Any]) -> None:
        if record["iteration"] % 10 == 0 or record["iteration"] == config.iterations:
            click.echo(f"iteration {record['iteration']}: return {record['return_before']:.2f} before, "
                       f"{record['return_after']:.2f} after adaptation ({record['seconds']:.2f} s)")

    run = train_policy(config, out, resume=resume, on_iteration=show)
    click.echo(f"run written to {out} ({run.iteration} iterations)")


@main.command(name="rl-export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Policy bundle folder to write.")
@click.option("--opset", default=18, show_default=True, help="ONNX opset of the graphs.")
def rl_export(run: Path, out: Path, opset: int) -> None:
    """Export a policy run as a policy bundle: forward.onnx, adapt_step.onnx (theta, obs, actions, advantages ->
    adapted theta), theta0.npy and policy.json, checked against PyTorch before writing."""
    from .export.policy import describe, export_policy

    click.echo(describe(export_policy(run, out, opset=opset)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
