"""Classification evaluation end to end, and report directories with plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.evaluate import EvalSettings, evaluate
from metaedge.sdk.evaluate.report import write_report
from metaedge.sdk.run import Run
from metaedge.sdk.tasks import EpisodicFamily, register_family
from metaedge.sdk.train import train


class Blobs(EpisodicFamily):
    """Gaussian blobs as 1x16 'time series', 12 train classes and 8 test classes (split by class)."""

    name = "test-blobs"

    def __init__(self, ways: int = 3):
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(20, 1, 16)).astype(np.float32)
        y = np.repeat(np.arange(20), 10)
        x = centres[y] + 0.3 * rng.normal(size=(200, 1, 16)).astype(np.float32)
        train_rows, test_rows = y < 12, y >= 12
        super().__init__({"train": (x[train_rows], y[train_rows]), "test": (x[test_rows], y[test_rows])}, ways=ways)


register_family("test-blobs", Blobs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    common = dict(family="test-blobs", shots=2, queries=3, meta_batch=4, iterations=15, width=8, log_every=5,
                  checkpoint_every=15, inner_lr=0.1)
    proto = train(TrainConfig(algo="protonet", **common), root / "proto", progress=False)
    maml = train(TrainConfig(algo="fomaml", ways=3, **common), root / "maml", progress=False)
    return Run.load(proto), Run.load(maml)


def test_classification_report_rows_and_skips(runs, tmp_path):
    proto, maml = runs
    settings = EvalSettings(tasks=12, shots=[1, 2], ways=[3, 5], steps=[0, 2], pretrain_steps=10, adam_steps=5,
                            chunk=5)
    report = evaluate(proto, settings)
    methods = {(r["method"], r["ways"], r["shots"]) for r in report["rows"]}
    for ways in (3, 5):
        for shots in (1, 2):
            assert ("metaedge protonet", ways, shots) in methods
            assert ("nearest neighbour (raw inputs)", ways, shots) in methods
            assert ("transfer (pretrained, new head)", ways, shots) in methods
    # each row is the fraction of correct predictions over tasks x ways x queries, the queries being what is left of
    # a class's 10 samples after the largest shot count (8): a whole number of correct predictions
    for r in report["rows"]:
        correct = r["accuracy"] * r["tasks"] * r["ways"] * 8
        assert correct == pytest.approx(round(correct), abs=1e-6), r
    assert report["split"] == "test" and report["metric"] == "accuracy"
    nn_row = next(r for r in report["rows"] if r["method"].startswith("nearest") and r["ways"] == 3)
    assert nn_row["accuracy"] > 0.8  # well-separated blobs: raw 1-NN is nearly perfect
    for ways in (3, 5):  # prototypes from every class's shots: far above chance
        proto_row = next(r for r in report["rows"] if r["method"] == "metaedge protonet" and r["ways"] == ways
                         and r["shots"] == 2)
        assert proto_row["accuracy"] > 2.0 / ways

    maml_report = evaluate(maml, settings)
    assert any("skipped for 5-way" in n for n in maml_report["notes"])
    assert {r["steps"] for r in maml_report["rows"] if r["method"] == "metaedge fomaml"} == {0, 2}

    files = write_report(report, tmp_path / "rep")
    # no ProtoNet row has more than one step count, so there is no adaptation-curve plot; the MAML report has one
    assert {p.name for p in files} == {"report.json", "report.md", "shots.png"}
    assert "steps.png" in {p.name for p in write_report(maml_report, tmp_path / "maml-rep")}
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["family"] == "test-blobs"
    assert (tmp_path / "rep" / "shots.png").read_bytes()[:4] == b"\x89PNG"


def test_regression_report_has_calibration_plot(tmp_path):
    out = train(TrainConfig(family="sensor-pressure", algo="ridge", shots=3, queries=5, meta_batch=4, iterations=5,
                            hidden=[8], skip=True, inner_lr=0.1), tmp_path / "p", progress=False)
    run = Run.load(out)
    report = evaluate(run, EvalSettings(tasks=8, shots=[3], steps=[0, 1], baseline_shots=[10], pretrain_steps=5,
                                        adam_steps=3))
    files = {p.name for p in write_report(report, tmp_path / "rep", run.family)}
    assert {"calibration.png", "steps.png", "report.md"} <= files
    assert "classic LS multilinear" in (tmp_path / "rep" / "report.md").read_text()


def test_protonet_evaluation_from_split_embeddings_scores_the_per_episode_predictions(runs):
    """The evaluator embeds the split once; its accuracies are those of the old path, which embedded every episode
    on its own, on the same episodes (same seed, same draws)."""
    import torch

    proto, _ = runs
    settings = EvalSettings(tasks=12, shots=[2], ways=[3], queries=3, steps=[0], baselines=False, chunk=5)
    report = evaluate(proto, settings)
    rng = np.random.default_rng(settings.seed)
    per_task = []
    for n in (5, 5, 2):  # the evaluator's chunks
        b = proto.family.sample_batch(rng, n, 2, 3, split="test", ways=3)
        xs, ys, xq = (torch.as_tensor(a) for a in (b.x_support, b.y_support, b.x_query))
        with torch.no_grad():
            logits = torch.stack([proto.learner.episode_logits(proto.state, *e) for e in zip(xs, ys, xq)])
        per_task.append((logits.argmax(-1).numpy() == b.y_query).mean(1))
    row = next(r for r in report["rows"] if r["method"] == "metaedge protonet")
    assert row["tasks"] == 12
    assert row["accuracy"] == pytest.approx(np.concatenate(per_task).mean(), abs=1e-12)
