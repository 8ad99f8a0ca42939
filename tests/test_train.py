"""Trainer: run directory contents, determinism, resume, and data-parallel ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.run import Run
from metaedge.sdk.train import train


def _cfg(**kw) -> TrainConfig:
    base = dict(family="sinusoid", algo="maml", shots=5, queries=5, meta_batch=6, iterations=12, hidden=[16, 16],
                log_every=4, checkpoint_every=4)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_run_directory_and_determinism(tmp_path):
    a = train(_cfg(), tmp_path / "a", progress=False)
    b = train(_cfg(), tmp_path / "b", progress=False)
    assert {p.name for p in a.iterdir()} >= {"config.json", "model.safetensors", "metrics.jsonl", "state.json"}
    wa, wb = _weights(a), _weights(b)
    assert all((wa[k] == wb[k]).all() for k in wa)
    metrics = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [4, 8, 12]
    _assert_only_safe_formats(a)


def _assert_only_safe_formats(run_dir) -> None:
    """Every file of a run directory parses as safetensors, JSON or JSON Lines (nothing a loader could unpickle)."""
    from safetensors import safe_open

    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    assert files
    for p in files:
        if p.suffix == ".safetensors":
            with safe_open(str(p), framework="pt") as f:  # raises on anything but a safetensors header + data
                assert list(f.keys())
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            assert all(isinstance(json.loads(line), dict) for line in p.read_text().splitlines())
        else:
            raise AssertionError(f"{p.name}: not safetensors, JSON or JSON Lines")


def test_resume_equals_uninterrupted(tmp_path):
    full = train(_cfg(algo="metasgd"), tmp_path / "full", progress=False)
    part = train(_cfg(algo="metasgd", iterations=8), tmp_path / "part", progress=False)
    train(_cfg(algo="metasgd", iterations=12), part, resume=True, progress=False)
    wf, wp = _weights(full), _weights(part)
    assert all((wf[k] == wp[k]).all() for k in wf)


def test_resume_refuses_a_different_setup_and_new_run_refuses_existing(tmp_path):
    out = train(_cfg(), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        train(_cfg(algo="anil", iterations=16), out, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(_cfg(), out, progress=False)


@pytest.mark.parametrize("algo", ["fomaml", "anil", "reptile"])
def test_every_algorithm_improves_post_adaptation_loss(tmp_path, algo, sinusoid_batch):
    cfg = _cfg(algo=algo, iterations=150, meta_batch=10, meta_lr=0.005, inner_lr=0.02, log_every=50)
    before = train(_cfg(algo=algo, iterations=1, meta_lr=1e-9), tmp_path / "before", progress=False)
    after = train(cfg, tmp_path / algo, progress=False)

    def held_out_loss(path) -> float:
        run = Run.load(path)
        return sum(run.learner.task_objective(run.state, *t).item() for t in zip(*sinusoid_batch))

    assert held_out_loss(after) < 0.8 * held_out_loss(before)


def test_normalisation_is_fitted_for_sensor_families(tmp_path):
    out = train(_cfg(family="sensor-ntc", iterations=2), tmp_path / "ntc", progress=False)
    run = Run.load(out)
    assert run.normalizer.x_std[0] > 100  # ADC counts: standardised, not raw
    assert run.family.name == "sensor-ntc"


def test_two_processes_equal_one(tmp_path):
    """torchrun with 2 CPU ranks (gloo) gives the single-process result for the same total meta-batch."""
    args = ["train", "--family", "sinusoid", "--algo", "maml", "--shots", "5", "--queries", "5", "--meta-batch",
            "6", "--iterations", "10", "--hidden", "16,16", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "metaedge.cli", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
         "metaedge.cli", *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["world_size"] == 2
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in w1:
        assert (w1[k] - w2[k]).abs().max().item() < 1e-5, k


@pytest.mark.slow
def test_compiled_meta_gradient_matches_eager(tmp_path, recwarn):
    eager = train(_cfg(iterations=6, log_every=2, compile=False), tmp_path / "eager", progress=False)
    compiled = train(_cfg(iterations=6, log_every=2, compile=True), tmp_path / "compiled", progress=False)
    assert not [w for w in recwarn if "torch.compile failed" in str(w.message)]  # really compiled
    we, wc = _weights(eager), _weights(compiled)
    for k in we:
        assert (we[k] - wc[k]).abs().max().item() < 1e-5, k


def _pressure(**kw) -> TrainConfig:
    base = dict(family="sensor-pressure", algo="ridge", shots=3, queries=5, meta_batch=4, iterations=3,
                hidden=[8, 8], activation="tanh", skip=True, log_every=3, checkpoint_every=3)
    base.update(kw)
    return TrainConfig(**base)


def test_init_from_starts_at_the_champions_meta_parameters_and_keeps_its_normaliser(tmp_path):
    champion = train(_pressure(), tmp_path / "champion", progress=False)
    # another lot, another seed: a fresh run would fit another normaliser and draw other initial weights
    cfg = _pressure(family_options={"lot": "B"}, seed=5, iterations=1, meta_lr=1e-9, init_from=str(champion))
    candidate = train(cfg, tmp_path / "candidate", progress=False)
    fresh = train(_pressure(family_options={"lot": "B"}, seed=5, iterations=1, meta_lr=1e-9), tmp_path / "fresh",
                  progress=False)
    wc, wn, wf = _weights(champion), _weights(candidate), _weights(fresh)
    assert set(wn) == set(wc)
    for k in wc:  # one Adam step of 1e-9 away from the champion, far from a fresh initialisation
        assert (wn[k] - wc[k]).abs().max() < 1e-6
    assert max((wf[k] - wc[k]).abs().max().item() for k in wc) > 1e-2
    norm = {p: json.loads((p / "config.json").read_text())["normalization"] for p in (champion, candidate, fresh)}
    assert norm[candidate] == norm[champion] != norm[fresh]
    assert Run.load(candidate).config.init_from == str(champion)


def test_init_from_refuses_another_architecture_in_one_sentence(tmp_path):
    champion = train(_pressure(), tmp_path / "champion", progress=False)
    with pytest.raises(ValueError, match=r"cannot start from .*champion: its model .* are not this run's"):
        train(_pressure(hidden=[8, 4], init_from=str(champion)), tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="its algo"):
        train(_pressure(algo="metasgd", init_from=str(champion)), tmp_path / "other2", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(_pressure(init_from=str(tmp_path / "nowhere")), tmp_path / "other3", progress=False)
