"""The model update: a candidate meta-trained from the champion on the fleet's units, promoted only on evidence.

``metaedge kb update --from champion`` runs :func:`update_from_kb`:

1. the champion bundle and its run are looked up in the knowledge base (the run directory must be on this server);
2. the fleet's units with more reference points than the shot count are exported as a per-unit table
   (``KnowledgeBase.export_units``);
3. a candidate run starts from the champion's meta-parameters and normaliser (``TrainConfig.init_from``) and
   meta-trains on the ``mixture`` family: the champion's original family plus the fleet's training units
   (:class:`metaedge.sdk.tasks.FleetMixture`); a quarter of the fleet's units (by default) is held out whole;
4. candidate and champion adapt on the very same tasks (:func:`metaedge.sdk.evaluate.compare_runs`): tasks of
   the held-out fleet units, and new tasks of the original family;
5. the candidate is exported, registered as ``candidate``, and promoted to ``champion`` only if it is better on
   the held-out fleet units (the paired difference's 95% CI lies below 0) and not worse on the original family by
   more than ``margin`` (default 5%) of the champion's error;
6. the decision and its figures are stored (``record_evaluation``) and returned for printing.

The normaliser stays the champion's: the meta-parameters are defined in its standardised coordinates, and every
bundle of the line must map physical units the same way (a refit on a mixture dominated by one lot would shift
the inputs under the learned features and make the starting point meaningless).

This module orchestrates (CLI layer): it may import sdk, export and knowledge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ExistsError, InputError, MissingError
from .sdk.evaluate import Comparison, compare_runs
from .sdk.run import Run
from .sdk.tasks.table import TableFamily, read_table
from .sdk.train import train

if TYPE_CHECKING:
    from .knowledge import KnowledgeBase

#: the fleet table's unit column (``kb export-units`` writes it)
UNIT_COLUMN = "unit"


class UpdateError(InputError):
    """A model update that cannot run as asked (no usable fleet units, the champion's run missing, ...)."""


@dataclass(frozen=True)
class UpdateSettings:
    """How a candidate is trained and judged.

    ``iterations`` meta-iterations from the champion at ``meta_lr`` (None: a third of the champion's, the usual
    fine-tuning step), cosine-decayed; each task is a fleet unit with probability ``weight``; ``test_fraction`` of
    the fleet's units (at least one) are held out by ``split_seed``; judged on ``eval_tasks`` tasks of each kind
    drawn from ``eval_seed``; ``margin``: how much worse (relative) the candidate may be on the original family.
    The defaults are scenario 1's (``benchmarks/fleet_update.py``): with half the tasks from the fleet the
    candidate learned lot B but lost 15-40% on lot A; one in ten kept lot A within its CI.
    """

    iterations: int = 3000
    meta_lr: float | None = None
    weight: float = 0.1
    test_fraction: float = 0.25
    split_seed: int = 0
    margin: float = 0.05
    eval_tasks: int = 500
    eval_seed: int = 4321
    seed: int = 1

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.eval_tasks < 2:
            raise UpdateError(f"iterations ({self.iterations}) must be >= 1 and eval_tasks ({self.eval_tasks}) >= 2")
        if not 0.0 <= self.weight <= 1.0 or not 0.0 < self.test_fraction < 1.0 or not 0.0 <= self.margin < 1.0:
            raise UpdateError(f"weight ({self.weight}) must be in [0, 1], test_fraction ({self.test_fraction}) in "
                              f"(0, 1) and margin ({self.margin}) in [0, 1)")


@dataclass(frozen=True)
class Decision:
    """The verdict on a candidate, with the two paired comparisons it rests on."""

    promote: bool
    reason: str
    margin: float
    fleet: Comparison
    original: Comparison

    def figures(self) -> dict[str, Any]:
        """JSON-able figures (stored with the evaluation)."""
        return {"promote": self.promote, "reason": self.reason, "margin": self.margin,
                "fleet": self.fleet.to_dict(), "original": self.original.to_dict()}


@dataclass(frozen=True)
class UpdateOutcome:
    """What ``kb update`` did: the bundles' ids, the candidate's run and bundle, the decision, the stored
    evaluation's id."""

    champion_id: str
    candidate_id: str
    candidate_run: Path
    candidate_bundle: Path
    fleet_units: int
    decision: Decision
    evaluation_id: int


def fleet_queries(fleet_csv: str | Path, inputs: tuple[str, ...], output: str, shots: int, queries: int
                  ) -> tuple[int, int]:
    """``(units, queries)``: how many units have more than ``shots`` points, and the query count every one of them
    can serve (at most ``queries``: tasks of a meta-batch need one size)."""
    units, _, _ = read_table(fleet_csv, UNIT_COLUMN, inputs, output)
    _, counts = np.unique(units, return_counts=True)
    counts = counts[counts > shots]
    if len(counts) < 2:
        raise UpdateError(f"{fleet_csv}: {len(counts)} unit(s) have more than {shots} reference points; a model "
                          "update needs two or more (one to learn from, one held out): audit more units")
    return int(len(counts)), int(min(queries, counts.min() - shots))


def train_candidate(champion_run: str | Path, fleet_csv: str | Path, out: str | Path,
                    settings: UpdateSettings = UpdateSettings(), progress: bool = False) -> Path:
    """Meta-train a candidate into run directory ``out`` from the champion run's meta-parameters on the mixture
    of its original family and the fleet units of ``fleet_csv`` (copied into ``out`` as ``fleet.csv``, so the run
    can always be reloaded); returns ``out``."""
    champion = Run.load(champion_run)
    cfg, fam = champion.config, champion.family
    if fam.task_kind != "regression" or fam.output_dim != 1:
        raise UpdateError(f"the champion's family {fam.name} is not a single-output regression family; a fleet "
                          "update needs one")
    out = Path(out).resolve()
    if out.exists():
        raise ExistsError(f"{out} already exists; choose another --out for the update")
    out.mkdir(parents=True)
    fleet = out / "fleet.csv"
    fleet.write_bytes(Path(fleet_csv).read_bytes())
    _, queries = fleet_queries(fleet, fam.input_names, fam.output_names[0], cfg.shots, cfg.queries)
    # a champion from an earlier update was trained on a mixture: its original family is that mixture's base (the
    # knowledge base's fleet table already holds every unit the earlier fleet had)
    base, base_options = ((cfg.family_options["base"], cfg.family_options.get("base_options") or {})
                          if cfg.family == "mixture" else (cfg.family, cfg.family_options))
    options = {"base": base, "base_options": base_options, "path": str(fleet), "weight": settings.weight,
               "min_rows": cfg.shots + 1, "group": UNIT_COLUMN, "test_fraction": settings.test_fraction,
               "split_seed": settings.split_seed}
    config = replace(cfg, family="mixture", family_options=options, queries=queries, init_from=str(champion.path),
                     iterations=settings.iterations, meta_lr=settings.meta_lr or cfg.meta_lr / 3,
                     lr_schedule="cosine", seed=settings.seed, checkpoint_every=settings.iterations,
                     log_every=min(cfg.log_every, settings.iterations))
    return train(config, out / "run", progress=progress)


def judge(candidate_run: str | Path, champion_run: str | Path, settings: UpdateSettings = UpdateSettings()
          ) -> Decision:
    """Compare the candidate (trained by :func:`train_candidate`) with the champion on the same tasks: the held-out
    fleet units and the original family."""
    candidate, champion = Run.load(candidate_run), Run.load(champion_run)
    mixture = candidate.family
    table = getattr(mixture, "table", None)
    if table is None:
        raise UpdateError(f"{candidate_run} was not trained on a fleet mixture; train it with train_candidate")
    shots, queries = candidate.config.shots, candidate.config.queries
    s = settings
    fleet = compare_runs(candidate, champion, table, tasks=s.eval_tasks, shots=shots, queries=queries, split="test",
                         seed=s.eval_seed)
    base = mixture.base
    # a table-trained champion (e.g. a first bundle from three units) may have no held-out units of its own: then
    # "not worse on the original family" is judged on its training units (in-sample), and the figures say so
    split = "train" if isinstance(base, TableFamily) and not base.units("test") else "test"
    original = compare_runs(candidate, champion, base, tasks=s.eval_tasks, shots=shots,
                            queries=champion.config.queries, split=split, seed=s.eval_seed + 1)
    better = fleet.difference + fleet.difference_ci < 0
    kept = original.candidate <= original.champion * (1 + s.margin)
    unit = f"{fleet.metric.upper()}"
    reason = (f"held-out fleet units: {unit} {fleet.candidate:.4g} vs {fleet.champion:.4g}, paired difference "
              f"{fleet.difference:+.4g} ± {fleet.difference_ci:.4g} ({'below 0' if better else 'not below 0'}); "
              f"original family ({split} split): {original.candidate:.4g} vs {original.champion:.4g} "
              f"({original.relative_change:+.1%}, allowed +{s.margin:.0%})")
    return Decision(better and kept, reason, s.margin, fleet, original)


def update_from_kb(kb: KnowledgeBase, out: str | Path, ref: str = "champion",
                   settings: UpdateSettings = UpdateSettings(), sign_key: str | Path | None = None,
                   progress: bool = False) -> UpdateOutcome:
    """The whole update against a :class:`metaedge.knowledge.KnowledgeBase` ``kb``: candidate trained into
    ``out/run``, exported to ``out/bundle``, registered as ``candidate``, judged, promoted to ``champion`` if it
    earned it, and the evaluation stored."""
    from .export.bundle import export_bundle

    out = Path(out).resolve()
    if out.exists():
        raise ExistsError(f"{out} already exists; choose another --out for the update")
    info = kb.bundle(ref)
    champion_run = Path(info.run_path)
    if not (champion_run / "config.json").is_file():
        raise MissingError(f"the run of bundle {info.id[:12]} ({champion_run}) is not on this machine; copy it there "
                           "or register the champion from a machine that has it")
    shots = Run.load(champion_run).config.shots
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.fleet.csv"
    try:
        kb.export_units(staging, min_points=shots + 1)
        run = train_candidate(champion_run, staging, out, settings, progress)
    finally:
        staging.unlink(missing_ok=True)
    units, _ = fleet_queries(out / "fleet.csv", tuple(info.input_names), info.output_names[0], shots, queries=1)
    bundle = export_bundle(run, out / "bundle", sign_key=sign_key)
    candidate_id = kb.register_bundle(bundle, alias="candidate")
    decision = judge(run, champion_run, settings)
    if decision.promote:
        kb.set_alias("champion", candidate_id)
    figures = {**decision.figures(), "settings": asdict(settings), "fleet_units": units,
               "candidate_run": str(run), "champion_run": str(champion_run)}
    evaluation = kb.record_evaluation(candidate_id, info.id, figures, "promoted" if decision.promote else "kept")
    return UpdateOutcome(info.id, candidate_id, run, bundle, units, decision, evaluation)


def format_outcome(o: UpdateOutcome) -> str:
    """What ``kb update`` prints: the verdict, the figures, the bundles."""
    d = o.decision
    lines = [f"candidate {o.candidate_id[:12]} (from champion {o.champion_id[:12]}, {o.fleet_units} fleet units): "
             + ("PROMOTED to champion" if d.promote else "not promoted; the champion stays"),
             f"{'':24s} {'candidate':>12s} {'champion':>12s} {'paired diff':>22s} {'tasks':>6s} {'units':>6s}"]
    for label, c in (("held-out fleet units", d.fleet), ("original family", d.original)):
        units = str(c.units) if c.units else "new"
        lines.append(f"{label:24s} {c.candidate:12.5g} {c.champion:12.5g} {c.difference:+12.4g} ± "
                     f"{c.difference_ci:<8.3g} {c.tasks:6d} {units:>6s}")
    lines += [f"rule: promote if the fleet difference's 95% CI is below 0 and the original family's {d.fleet.metric} "
              f"is at most {d.margin:.0%} higher", f"evaluation {o.evaluation_id} stored; candidate bundle "
              f"{o.candidate_bundle}, run {o.candidate_run}"]
    return "\n".join(lines)
