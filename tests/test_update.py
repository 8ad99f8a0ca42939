"""The model update end to end: champion bundle -> device journals of lot B units -> kb ingest -> kb update."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("sqlalchemy", reason="the knowledge base needs the kb extra (pip install metaedge[kb])")

from metaedge.cli import main  # noqa: E402
from metaedge.errors import InputError  # noqa: E402
from metaedge.export.bundle import export_bundle  # noqa: E402
from metaedge.knowledge import KnowledgeBase  # noqa: E402
from metaedge.runtime.model import Model  # noqa: E402
from metaedge.sdk.config import TrainConfig  # noqa: E402
from metaedge.sdk.tasks import make_family  # noqa: E402
from metaedge.sdk.train import train  # noqa: E402
from metaedge.update import UpdateSettings, fleet_queries, update_from_kb  # noqa: E402

SETTINGS = UpdateSettings(iterations=6, eval_tasks=30, test_fraction=0.34)


@pytest.fixture(scope="module")
def fleet_kb(tmp_path_factory):
    """A knowledge base with a lot A champion and 12 journaled lot B units, 6 of them audited at 20 points."""
    root = tmp_path_factory.mktemp("update")
    run = train(TrainConfig(family="sensor-pressure", algo="ridge", shots=3, queries=20, meta_batch=8, iterations=20,
                            hidden=[8, 8], activation="tanh", skip=True, log_every=10, checkpoint_every=20),
                root / "champion", progress=False)
    bundle = export_bundle(run, root / "champion.bundle")
    url = f"sqlite:///{root / 'kb.db'}"
    kb = KnowledgeBase.init(url)
    champion_id = kb.register_bundle(bundle, alias="champion")
    model, lot_b, rng = Model.load(bundle), make_family("sensor-pressure", lot="B"), np.random.default_rng(0)
    journal = root / "line.db"
    for i in range(12):
        task = lot_b.sample_task(rng, 3, 20)
        unit = f"B{i:04d}"
        adapted = model.adapt(task.x_support, task.y_support, journal=journal, unit=unit, save=root / f"{unit}.state")
        if i % 2 == 0:
            adapted.check(task.x_query, task.y_query, journal=journal, unit=unit)
    kb.ingest(journal)
    return kb, url, root, champion_id


@pytest.fixture(scope="module")
def first_update(fleet_kb):
    kb, _, root, _ = fleet_kb
    return update_from_kb(kb, root / "update1", settings=SETTINGS)


def test_update_trains_judges_registers_and_stores_the_decision(fleet_kb, first_update):
    kb, _, root, champion_id = fleet_kb
    outcome = first_update
    assert outcome.champion_id == champion_id and outcome.fleet_units == 6
    # the fleet table holds only the audited units (23 points each), copied into the candidate's folder
    with open(root / "update1" / "fleet.csv") as f:
        rows = list(csv.DictReader(f))
    counts = {u: sum(r["unit"] == u for r in rows) for u in {r["unit"] for r in rows}}
    assert counts == {f"B{i:04d}": 23 for i in range(0, 12, 2)}
    assert fleet_queries(root / "update1" / "fleet.csv", ("bridge_output", "temperature"), "pressure", 3, 20) == (6, 20)
    d = outcome.decision
    assert d.fleet.units == 2 and d.fleet.tasks == d.original.tasks == 30  # 2 of 6 units held out, whole
    rule = (d.fleet.difference + d.fleet.difference_ci < 0) and d.original.candidate <= 1.05 * d.original.champion
    assert d.promote == rule
    assert kb.bundle("candidate").id == outcome.candidate_id != champion_id
    assert kb.bundle("champion").id == (outcome.candidate_id if d.promote else champion_id)
    stored = kb.evaluations()[-1]
    assert stored.id == outcome.evaluation_id and stored.decision == ("promoted" if d.promote else "kept")
    assert stored.figures["fleet"]["difference"] == pytest.approx(d.fleet.difference)
    assert stored.figures["original"]["candidate"] == pytest.approx(d.original.candidate)
    # the candidate really started from the champion and trained on the mixture
    cfg = __import__("json").loads((outcome.candidate_run / "config.json").read_text())["train"]
    assert cfg["family"] == "mixture" and cfg["init_from"] == str(root / "champion")
    assert cfg["family_options"]["base"] == "sensor-pressure" and cfg["family_options"]["min_rows"] == 4


def test_an_update_of_an_updated_champion_keeps_the_original_family(fleet_kb, first_update):
    kb, _, root, champion_id = fleet_kb
    first = first_update
    kb.set_alias("champion", first.candidate_id)  # as if promoted
    try:
        second = update_from_kb(kb, root / "chain2", settings=SETTINGS)
    finally:
        kb.set_alias("champion", champion_id)
    options = __import__("json").loads((second.candidate_run / "config.json").read_text())["train"]["family_options"]
    assert second.champion_id == first.candidate_id
    assert options["base"] == "sensor-pressure" and options["base_options"] == {}  # not the first update's mixture
    assert second.decision.original.split == "test"


def test_cli_update_prints_the_decision(fleet_kb):
    _, url, root, _ = fleet_kb
    result = CliRunner().invoke(main, ["kb", "update", "--db", url, "--out", str(root / "update2"), "--iterations",
                                       "3", "--eval-tasks", "10", "--test-fraction", "0.34", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "held-out fleet units" in result.output and "original family" in result.output
    assert ("PROMOTED" in result.output) != ("not promoted" in result.output)
    again = CliRunner().invoke(main, ["kb", "update", "--db", url, "--out", str(root / "update2")])
    assert again.exit_code == 1 and "already exists" in again.output


def test_update_refuses_a_fleet_without_audited_units(tmp_path):
    table = tmp_path / "fleet.csv"
    table.write_text("unit,bridge_output,temperature,pressure\n" + "".join(
        f"u{i},{10 + j},{20 + j},{30 + j}\n" for i in range(5) for j in range(3)))
    with pytest.raises(InputError, match="0 unit.* have more than 3 reference points; a model update needs two"):
        fleet_queries(table, ("bridge_output", "temperature"), "pressure", 3, 20)
