"""The meta-evaluator: one code path for regression and classification runs.

For every setting (ways x shots) it draws held-out tasks from the family's evaluation split, lets the
meta-learned model adapt after each requested number of inner steps, runs the baselines on the very
same tasks, and reports per-task metrics as mean and 95% CI:

- regression: MSE and RMSE in the family's physical units (the headline is the family's ``metric``);
- classification: accuracy.

Which baselines run depends on the task kind (:mod:`.baselines`): scratch and transfer networks and
classic calibration for regression; nearest neighbour and pretrain-then-new-head for classification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ..allocator import tune_allocator
from ..learners import Learner, MetaState
from ..normalize import Normalizer
from ..progress import progress as progress_bar
from ..run import Run, to_tensors
from ..tasks import EpisodeRows, EpisodicFamily, TaskBatch
from . import baselines
from .stats import mean_ci


@dataclass
class EvalSettings:
    """What to evaluate. ``queries`` is points per task for regression, samples per class for classification."""

    tasks: int = 1000
    shots: list[int] = field(default_factory=lambda: [5])
    ways: list[int] = field(default_factory=list)
    queries: int | None = None
    steps: list[int] = field(default_factory=lambda: [0, 1, 5, 10])
    baseline_shots: list[int] = field(default_factory=list)
    baselines: bool = True
    adam_steps: int = 100
    adam_lr: float = 0.01
    pretrain_steps: int = 2000
    split: str | None = None
    seed: int = 1234
    chunk: int = 250
    #: held-out tasks whose predictions are kept for plots (``report`` calibration curves)
    keep_examples: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.shots, int):
            self.shots = [self.shots]
        if self.tasks < 1 or not self.shots or min(self.shots) < 1:
            raise InputError("--tasks and every --shots value must be positive integers")
        if not self.steps:
            raise InputError("--steps needs at least one step count, e.g. 0,1,5")


class Rows:
    """Per-task metric values per (method, ways, shots, steps), summarised as mean ± 95% CI."""

    def __init__(self, headline: str) -> None:
        self.headline = headline
        self.values: dict[tuple, dict[str, list[np.ndarray]]] = {}
        #: per (ways, setting shots): the headline metric per task of every row, in task order, for pairing
        self.by_setting: dict[tuple, dict[tuple, list[np.ndarray]]] = {}

    def add(self, method: str, ways: int | None, shots: int, steps: int | None, metrics: dict[str, np.ndarray],
            setting: int | None = None) -> None:
        slot = self.values.setdefault((method, ways, shots, steps), {})
        for name, v in metrics.items():
            slot.setdefault(name, []).append(np.asarray(v, dtype=np.float64))
        same_tasks = self.by_setting.setdefault((ways, shots if setting is None else setting), {})
        same_tasks.setdefault((method, shots, steps), []).append(np.asarray(metrics[self.headline], np.float64))

    def paired(self, reference: str, ref_steps: int) -> list[dict[str, Any]]:
        """Per setting, ``reference`` (at ``ref_steps``) minus every other method on the very same tasks.

        Paired differences are far sharper than comparing two CIs: task difficulty cancels out.
        """
        out = []
        for (ways, setting), rows in self.by_setting.items():
            ref = rows.get((reference, setting, ref_steps))
            if ref is None:
                continue
            ref_v = np.concatenate(ref)
            for (method, shots, steps), chunks in rows.items():
                if method == reference:
                    continue
                diff, ci = mean_ci(ref_v - np.concatenate(chunks))
                out.append({"reference": reference, "reference_steps": ref_steps, "method": method, "ways": ways,
                            "setting_shots": setting, "shots": shots, "steps": steps, "metric": self.headline,
                            "difference": diff, "difference_ci": ci})
        return out

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for (method, ways, shots, steps), metrics in self.values.items():
            row: dict[str, Any] = {"method": method, "ways": ways, "shots": shots, "steps": steps}
            for name, chunks in metrics.items():
                v = np.concatenate(chunks)
                row[name], row[f"{name}_ci"] = mean_ci(v)
                row["tasks"] = int(v.size)
            out.append(row)
        return out


def task_metrics(kind: str, pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-task metrics; ``pred`` ``(T, q, out)`` values or logits, ``target`` ``(T, q, out)`` or labels ``(T, q)``."""
    if kind == "classification":
        return {"accuracy": (pred.argmax(-1) == target).mean(1)}
    mse = ((pred.astype(np.float64) - target.astype(np.float64)) ** 2).reshape(len(pred), -1).mean(1)
    return {"mse": mse, "rmse": np.sqrt(mse)}


class SplitEmbeddings:
    """Every sample of one split embedded once (evaluation mode), for a learner with ``embeds_samples``.

    An episode's logits are then prototypes and distances over rows of the embeddings: the same predictions
    as embedding each episode's images (batch norm uses running statistics, so an embedding does not depend
    on what it is embedded with), at the cost of one forward pass per sample of the split instead of one per
    sample per episode. The embeddings are computed on first use.
    """

    def __init__(self, learner: Learner, state: MetaState, family: EpisodicFamily, split: str,
                 normalizer: Normalizer) -> None:
        self.learner, self.state, self.family, self.split, self.normalizer = learner, state, family, split, normalizer
        self._z: torch.Tensor | None = None

    @property
    def z(self) -> torch.Tensor:
        """Embeddings ``(N, d)`` of ``family.arrays(split)``, row for row."""
        if self._z is None:
            x, _ = self.family.arrays(self.split)
            self._z = self.learner.embed_inputs(self.state, torch.from_numpy(self.normalizer.samples(x)))
        return self._z

    def logits(self, rows: EpisodeRows) -> torch.Tensor:
        """Logits ``(T, ways*queries, ways)`` of the episodes ``rows`` (from ``family.sample_rows``)."""
        if rows.split != self.split:
            raise ValueError(f"episodes of split {rows.split!r} asked of the embeddings of {self.split!r}")
        z = self.z
        return self.learner.logits_from_embeddings(z[torch.from_numpy(rows.support)],
                                                   torch.from_numpy(rows.y_support), z[torch.from_numpy(rows.query)])


#: per-task predictive-interval metrics of a batch of held-out tasks from their first ``shots`` support points:
#: ``(batch, shots) -> {"coverage": (T,), "interval_width": (T,)}`` (the CLI builds one from the exported bundle,
#: ``metaedge.export.uncertainty.interval_metrics``: the evaluator itself never imports the runtime)
IntervalMetrics = Callable[[TaskBatch, int], dict[str, np.ndarray]]


def evaluate(run: Run, settings: EvalSettings, progress: bool = False,
             intervals: IntervalMetrics | None = None) -> dict[str, Any]:
    """Evaluate ``run`` on held-out tasks; returns a JSON-able report (see :func:`format_table`).

    ``intervals`` (regression): the meta-learned method's rows at its own step count gain ``coverage`` and
    ``interval_width`` on the very same tasks."""
    fam, learner, norm, s = run.family, run.learner, run.normalizer, settings
    tune_allocator()  # batches of conv activations reused from the heap (2.2x for Omniglot ProtoNet evaluation)
    if run.config.threads > 0:
        torch.set_num_threads(run.config.threads)
    kind = fam.task_kind
    classification = kind == "classification"
    split = s.split or getattr(fam, "eval_split", "test")
    queries = s.queries or _default_queries(fam, split, max(s.shots))
    ways_list: list[int | None] = (s.ways or [run.config.ways or fam.output_dim]) if classification else [None]
    rng = np.random.default_rng(s.seed)
    rows, notes, examples = Rows(fam.metric), [], []
    context = baselines.Context(run, s) if s.baselines else None
    method = f"metaedge {learner.name}"
    # embedding learners: every sample of the split embedded once, episodes drawn from the embeddings
    embedded = (SplitEmbeddings(learner, run.state, fam, split, norm)
                if classification and learner.embeds_samples and isinstance(fam, EpisodicFamily) else None)
    bar = progress_bar(total=s.tasks * len(ways_list) * len(s.shots), enabled=progress, desc=f"eval {fam.name}",
                       unit="task")
    for ways in ways_list:
        ways_kw = {"ways": ways} if classification else {}
        runnable = learner.can_predict(ways)
        if not runnable:
            notes.append(f"{method} skipped for {ways}-way: its head has {learner.output_dim} outputs; "
                         f"meta-train with --ways {ways} for that setting")
        for shots in s.shots:
            # regression: one draw serves the meta-learner (first `shots` points) and larger classic baselines
            max_shots = shots if classification else max([shots, *s.baseline_shots])
            done = 0
            while done < s.tasks:
                n = min(s.chunk, s.tasks - done)
                if embedded is not None:  # the same draw as sample_batch, as row indices into the embeddings
                    drawn = fam.sample_rows(rng, n, max_shots, queries, split=split, **ways_kw)
                    batch = fam.batch_of(drawn) if context is not None else None
                    nb = norm.batch(batch) if batch is not None else None
                    target = drawn.y_query
                else:
                    batch = fam.sample_batch(rng, n, max_shots, queries, split=split, **ways_kw)
                    nb = norm.batch(batch)
                    xs, ys, xq, _ = to_tensors(nb)
                    if not classification:  # the first `shots` reference points; episodes are drawn per setting
                        xs, ys = xs[:, :shots], ys[:, :shots]
                    target = batch.y_query

                def output(t: torch.Tensor) -> np.ndarray:
                    a = t.detach().cpu().numpy()
                    return a if classification else norm.y_inverse(a)

                if runnable:
                    # a learner without inner loop (prototypes): one row, not one per step count
                    step_list = sorted(set(s.steps)) if learner.has_inner_loop else [0]
                    if embedded is not None:
                        preds = {st: embedded.logits(drawn) for st in step_list}
                    else:
                        preds = learner.predictions_after_steps(run.state, xs, ys, xq, step_list)
                    for st, p in preds.items():
                        metrics = task_metrics(kind, output(p), target)
                        if intervals is not None and not classification and st == learner.inner_steps:
                            metrics.update(intervals(batch, shots))
                        rows.add(method, ways, shots, st, metrics)
                    if not examples and not classification:
                        examples = _examples(batch, shots, output(preds[max(preds)]), s.keep_examples)
                    beyond = sorted(st for st in s.steps if st > learner.inner_steps)
                    if beyond and learner.has_inner_loop:
                        # past the trained step count learned rates may diverge; the device guards against it
                        guarded = learner.predictions_after_steps(run.state, xs, ys, xq, beyond, guard=True)
                        for st, p in guarded.items():
                            rows.add(f"{method} (guarded)", ways, shots, st, task_metrics(kind, output(p), target),
                                     setting=shots)
                if context is not None:
                    for label, kshots, steps, pred in context.predictions(batch, nb, shots, output):
                        rows.add(label, ways, kshots, steps, task_metrics(kind, pred, target), setting=shots)
                done += n
                bar.update(n)
    bar.close()
    result = rows.summary()
    ref_steps = (learner.inner_steps if learner.inner_steps in s.steps or not learner.has_inner_loop
                 else max(s.steps))
    return {
        "family": fam.name,
        "algo": learner.name,
        "run": str(run.path),
        "task_kind": kind,
        "metric": fam.metric,
        "units": list(fam.output_units) if not classification else [],
        "split": split,
        "settings": asdict(s),
        "rows": result,
        "notes": notes,
        "paired": rows.paired(method, ref_steps),
        "best_classic": _best_classic(result),
        "examples": examples,
    }


def _default_queries(fam, split: str, shots: int) -> int:
    """100 points per regression task; 15 per class for classification, fewer where classes are small."""
    if fam.task_kind != "classification":
        return 100
    counts = getattr(fam, "class_counts", lambda _: {})(split)
    return max(1, min(15, min(counts.values()) - shots)) if counts else 15


def _examples(batch, shots: int, pred: np.ndarray, n: int) -> list[dict[str, Any]]:
    """A few held-out regression tasks with their reference points and adapted predictions, for plots."""
    out = []
    for i in range(min(n, len(batch))):
        out.append({"info": {k: v for k, v in batch.info[i].items() if isinstance(v, int | float | str)},
                    "x_support": batch.x_support[i, :shots].tolist(), "y_support": batch.y_support[i, :shots].tolist(),
                    "x_query": batch.x_query[i].tolist(), "y_query": batch.y_query[i].tolist(),
                    "prediction": pred[i].tolist()})
    return out


def _best_classic(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shot count, the classic least-squares polynomial with the lowest mean RMSE (degree picked in hindsight)."""
    best: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r["method"].startswith("classic LS polynomial") and (
            r["shots"] not in best or r["rmse"] < best[r["shots"]]["rmse"]
        ):
            best[r["shots"]] = r
    return [best[k] for k in sorted(best)]


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of a report, one row per (method, ways, shots, steps)."""
    metric = report["metric"]
    unit = report["units"][0] if report["units"] and report["units"][0] else ""
    scale = 100.0 if metric == "accuracy" else 1.0
    label = "accuracy [%]" if metric == "accuracy" else metric.upper() + (
        f" [{unit}{'^2' if metric == 'mse' else ''}]" if unit else "")
    lines = [f"{report['family']} / {report['algo']} on split {report['split']!r}: {label}, mean ± 95% CI over tasks",
             f"{'method':40s} {'ways':>4s} {'shots':>5s} {'steps':>5s} {label:>22s}"]
    for r in report["rows"]:
        ways = "-" if r["ways"] is None else str(r["ways"])
        steps = "-" if r["steps"] is None else str(r["steps"])
        shots = "-" if r["shots"] == 0 else str(r["shots"])
        value, ci = r[metric] * scale, r[metric + "_ci"] * scale
        extra = (f"   interval coverage {r['coverage']:.3f}, width {r['interval_width']:.4g}" if "coverage" in r
                 else "")
        lines.append(f"{r['method']:40s} {ways:>4s} {shots:>5s} {steps:>5s} {value:>12.4f} ± {ci:.4f}{extra}")
    paired = report.get("paired", [])
    if paired:
        ref = paired[0]
        lines.append(f"paired difference on the same tasks: {ref['reference']} ({ref['reference_steps']} steps) minus "
                     f"method ({'negative' if metric != 'accuracy' else 'positive'} = meta-learned better)")
        for p in paired:
            ways = "-" if p["ways"] is None else str(p["ways"])
            steps = "-" if p["steps"] is None else str(p["steps"])
            shots = "-" if p["shots"] == 0 else str(p["shots"])
            lines.append(f"  {p['method']:38s} {ways:>4s} {shots:>5s} {steps:>5s} "
                         f"{p['difference'] * scale:>+12.4f} ± {p['difference_ci'] * scale:.4f}")
    curve = report.get("selection")
    if curve:
        lines.append(f"{curve['metric'].upper()} against reference points, mean over {curve['tasks']} tasks, each a "
                     f"pool of {curve['pool']} settable points:")
        lines.append(f"  {'points':20s}" + "".join(f"{k:>9d}" for k in curve["points"]))
        for method, values in curve["mean"].items():
            lines.append(f"  {method:20s}" + "".join(f"{v:>9.4g}" for v in values))
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)
