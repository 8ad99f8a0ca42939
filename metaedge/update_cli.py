"""The ``kb update`` click command, kept beside the ``kb`` group so that it merges into whichever module defines
the group: ``register_update_command(kb)``. Heavy imports (torch, the exporter) happen when the command runs."""

from __future__ import annotations

from pathlib import Path

import click


def register_update_command(kb: click.Group) -> click.Command:
    """Add ``update`` to the ``kb`` group and return it."""

    @kb.command(name="update")
    @click.option("--db", "url", help="Knowledge base URL. [$METAEDGE_KB, else sqlite:///kb.db]")
    @click.option("--from", "ref", default="champion", show_default=True,
                  help="The bundle to start from: an alias or a bundle id (prefix).")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                  help="Folder for the candidate's run, bundle and fleet table. [updates/<UTC time>]")
    @click.option("--iterations", default=3000, show_default=True, help="Meta-iterations from the champion.")
    @click.option("--meta-lr", type=float, help="Outer step size. [a third of the champion's]")
    @click.option("--weight", default=0.1, show_default=True, help="Share of training tasks that are fleet units.")
    @click.option("--test-fraction", default=0.25, show_default=True,
                  help="Share of the fleet's units held out (whole) to judge the candidate.")
    @click.option("--margin", default=0.05, show_default=True,
                  help="How much worse (relative) the candidate may be on the original family.")
    @click.option("--eval-tasks", default=500, show_default=True, help="Tasks per comparison.")
    @click.option("--seed", default=1, show_default=True, help="Seed of the candidate's training.")
    @click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
                  help="Sign the candidate bundle with this Ed25519 private key (`metaedge keygen`).")
    @click.option("--json", "as_json", is_flag=True, help="Print the decision's figures as JSON.")
    @click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
    def update(url: str | None, ref: str, out: Path | None, iterations: int, meta_lr: float | None, weight: float,
               test_fraction: float, margin: float, eval_tasks: int, seed: int, sign_key: Path | None,
               as_json: bool, progress: bool) -> None:
        """Meta-train a candidate from the champion on the original family plus the fleet's units; promote it
        only if it is better on held-out fleet units and not worse on the original family beyond --margin.

        The candidate starts from the champion run's meta-parameters and keeps its normaliser; units with more
        reference points than the shot count join the fleet, a share of them held out whole for judging. The
        decision and its figures are stored in the knowledge base and printed.
        """
        import json
        from datetime import datetime, timezone

        from .knowledge import KnowledgeBase
        from .update import UpdateSettings, format_outcome, update_from_kb

        settings = UpdateSettings(iterations=iterations, meta_lr=meta_lr, weight=weight,
                                  test_fraction=test_fraction, margin=margin, eval_tasks=eval_tasks, seed=seed)
        if out is None:
            out = Path("updates") / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        outcome = update_from_kb(KnowledgeBase(url), out, ref=ref, settings=settings, sign_key=sign_key,
                                 progress=progress)
        if as_json:
            click.echo(json.dumps({"candidate": outcome.candidate_id, "champion": outcome.champion_id,
                                   "evaluation": outcome.evaluation_id, **outcome.decision.figures()}, indent=2))
        else:
            click.echo(format_outcome(outcome))

    return update
