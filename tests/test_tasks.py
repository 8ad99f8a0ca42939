"""Task protocol: sinusoid definition, determinism, batching, and user-registered families."""

from __future__ import annotations

import numpy as np
import pytest

from metaedge.sdk.config import TrainConfig
from metaedge.sdk.tasks import Task, TaskBatch, TaskFamily, family_names, make_family, register_family
from metaedge.sdk.train import train


def test_sinusoid_follows_the_maml_paper():
    fam = make_family("sinusoid")
    b = fam.sample_batch(np.random.default_rng(0), 2000, 10, 0)
    amps = np.array([i["amplitude"] for i in b.info])
    phases = np.array([i["phase"] for i in b.info])
    assert 0.1 <= amps.min() and amps.max() <= 5.0 and 0 <= phases.min() and phases.max() <= np.pi
    assert -5 <= b.x_support.min() and b.x_support.max() <= 5
    np.testing.assert_allclose(b.y_support, amps[:, None, None] * np.sin(b.x_support - phases[:, None, None]),
                               atol=1e-5)
    assert b.x_support.dtype == np.float32 and b.x_support.shape == (2000, 10, 1)


def _sinusoid_task_one_uniform_at_a_time(fam, rng, shots, queries):
    """The sinusoid draw as it was written before ``sample_batch`` (one ``rng.uniform`` call per quantity)."""
    amp = rng.uniform(*fam.amplitude)
    phase = rng.uniform(*fam.phase)
    x = rng.uniform(*fam.x_range, size=(shots + queries, 1))
    y = amp * np.sin(x - phase)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Task(x[:shots], y[:shots], x[shots:], y[shots:], {"amplitude": amp, "phase": phase})


def test_sinusoid_batch_draws_what_its_tasks_draw_one_by_one():
    """The one-call ``sample_batch`` gives the per-task ``uniform`` draws bit for bit (runs stay the same), and
    ``sample_task`` is its first task."""
    fam = make_family("sinusoid")
    fast = fam.sample_batch(np.random.default_rng([7, 3]), 9, 4, 6)
    rng = np.random.default_rng([7, 3])
    slow = TaskBatch.stack([_sinusoid_task_one_uniform_at_a_time(fam, rng, 4, 6) for _ in range(9)])
    single = fam.sample_task(np.random.default_rng([7, 3]), 4, 6)
    assert np.array_equal(single.x_query, slow.x_query[0]) and single.info == slow.info[0]
    for key in ("x_support", "y_support", "x_query", "y_query"):
        a, b = getattr(fast, key), getattr(slow, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert fast.info == slow.info


@pytest.mark.parametrize("name", ["sinusoid", "sensor-ntc", "sensor-loadcell", "sensor-pressure"])
def test_families_are_deterministic_for_a_seed(name):
    fam = make_family(name)
    a = fam.sample_batch(np.random.default_rng(42), 4, 3, 5)
    b = fam.sample_batch(np.random.default_rng(42), 4, 3, 5)
    c = fam.sample_batch(np.random.default_rng(43), 4, 3, 5)
    assert np.array_equal(a.x_support, b.x_support) and np.array_equal(a.y_query, b.y_query)
    assert not np.array_equal(a.x_support, c.x_support)


def test_stack_refuses_empty_and_round_trips():
    with pytest.raises(ValueError, match="at least one task"):
        TaskBatch.stack([])
    t = Task(np.zeros((2, 1), np.float32), np.ones((2, 1), np.float32), np.zeros((3, 1), np.float32),
             np.ones((3, 1), np.float32), {"k": 1})
    batch = TaskBatch.stack([t, t])
    assert len(batch) == 2 and batch.task(1).info == {"k": 1}


class Line(TaskFamily):
    """A user's own family: lines with random slope through the origin, two inputs (one irrelevant)."""

    name = "test-line"
    input_shape = (2,)
    input_names = ("x", "noise")

    def sample_task(self, rng, shots, queries, split="train"):
        slope = rng.uniform(-2, 2)
        x = rng.uniform(-1, 1, (shots + queries, 2)).astype(np.float32)
        y = (slope * x[:, :1]).astype(np.float32)
        return Task(x[:shots], y[:shots], x[shots:], y[shots:], {"slope": slope})


def test_user_registered_family_trains(tmp_path):
    register_family("test-line", Line)
    assert "test-line" in family_names()
    with pytest.raises(ValueError, match="already registered"):
        register_family("test-line", lambda: None)
    out = train(TrainConfig(family="test-line", iterations=3, meta_batch=2, hidden=[4]), tmp_path / "r",
                progress=False)
    assert (out / "model.safetensors").is_file()


def test_unknown_family_lists_known_ones():
    with pytest.raises(ValueError, match="known families: .*sinusoid"):
        make_family("sinusoidd")
