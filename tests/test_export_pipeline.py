"""The export pipeline's steps alone: the checks catch a wrong bundle, commit never overwrites, and a failing
step leaves nothing behind."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from metaedge.errors import ExistsError, InputError
from metaedge.export import bundle as steps
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.run import Run
from metaedge.sdk.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("pipeline")
    path = train(TrainConfig(family="sinusoid", algo="maml", shots=5, queries=5, meta_batch=2, iterations=3,
                             hidden=[8], activation="tanh", inner_steps=2), root / "run", progress=False)
    return Run.load(path)


def _stage(run: Run, folder, formats: str = "all") -> dict:
    """Every step up to the checks, as export_bundle runs them; returns the manifest written into ``folder``."""
    solver = steps.device_solver(run.learner)
    example = steps.Example.of(run)
    layout = steps.parameter_layout(run)
    graphs = steps.write_graphs(run, folder, solver, example)
    firmware, skipped = steps.write_firmware_files(run, folder, solver, formats)
    files = [*graphs.values(), *firmware.values(), *steps.write_parameters(run, folder, layout)]
    manifest = steps.build_manifest(run, run.path, folder, solver, example, layout, graphs, firmware, skipped, files)
    steps.write_manifest(folder, manifest)
    return manifest


def test_the_steps_stage_what_the_manifest_lists(run, tmp_path):
    manifest = _stage(run, tmp_path)
    assert sorted(manifest.files) == sorted(p.name for p in tmp_path.iterdir() if p.name != "manifest.json")
    assert set(manifest.graphs.files()) == {"forward", "adapt_step", "adapt_steps", "adapt_predict"}
    assert manifest.adaptation.solver == "sgd" and manifest.adaptation.inner_steps == 2
    theta = np.load(tmp_path / "theta0.npy", allow_pickle=False)
    np.testing.assert_array_equal(theta[:8], run.state["params"]["body.0.weight"].numpy().ravel())
    assert theta.size == manifest.adaptation.size == 8 + 8 + 8 + 1


def test_checks_record_parity(run, tmp_path):
    checked = steps.run_checks(run, tmp_path, _stage(run, tmp_path))
    assert checked.parity.max_relative_difference <= 1e-5
    assert checked.native_parity.max_scaled_difference <= 1e-5


@pytest.mark.parametrize("name,message", [
    # MAML's step sizes are constants inside the graphs: rates.npy itself is compared with the run's
    ("rates.npy", r"rates.npy does not hold the run's step sizes; the bundle was not written"),
    # the C library starts from model.mebin's parameters, ONNX Runtime from theta0.npy
    ("theta0.npy", r"the C library's predictions differ from ONNX Runtime by .* the bundle was not written"),
])
def test_checks_refuse_a_wrong_bundle(run, tmp_path, name, message):
    manifest = _stage(run, tmp_path)
    np.save(tmp_path / name, np.load(tmp_path / name, allow_pickle=False) * 1.5)
    manifest = replace(manifest, files={**manifest.files, name: steps.sha256(tmp_path / name)})
    steps.write_manifest(tmp_path, manifest)
    with pytest.raises(InputError, match=message):
        steps.run_checks(run, tmp_path, manifest)


def test_commit_moves_the_staged_folder_and_refuses_to_overwrite(tmp_path):
    staged = tmp_path / ".b.partial"
    staged.mkdir()
    (staged / "manifest.json").write_text("{}")
    out = tmp_path / "b.meb"
    out.mkdir()
    (out / "manifest.json").write_text('{"old": 1}')
    with pytest.raises(ExistsError, match="already exists"):
        steps.commit(staged, out)
    assert json.loads((out / "manifest.json").read_text()) == {"old": 1} and staged.is_dir()
    fresh = tmp_path / "c.meb"
    assert steps.commit(staged, fresh) == fresh
    assert (fresh / "manifest.json").read_text() == "{}" and not staged.exists()


def test_a_failing_step_leaves_nothing_half_written(run, tmp_path, monkeypatch):
    out = tmp_path / "sub" / "bundle.meb"
    monkeypatch.setattr(steps, "parity", lambda run, folder: steps.Parity(0.5, 0.1, "task 0 step 1", 7))
    with pytest.raises(InputError, match=r"differ from PyTorch by 5.00e-01 .*task 0 step 1.*not written"):
        steps.export_bundle(run.path, out)
    assert not out.exists() and list(out.parent.iterdir()) == []

    def broken(*args, **kwargs):
        raise KeyError("a bug inside a step")

    monkeypatch.setattr(steps, "build_manifest", broken)
    with pytest.raises(KeyError):
        steps.export_bundle(run.path, out, check=False)
    assert not out.exists() and list(out.parent.iterdir()) == []
