"""The fleet mixture family: original tasks mixed with whole fleet units, held out by unit."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from metaedge.errors import InputError
from metaedge.sdk.tasks import FleetMixture, make_family


def _fleet_csv(path, rows_per_unit: dict[str, int]) -> str:
    """A per-unit table as `kb export-units` writes it: unit, the family's inputs, its output (lot B units)."""
    fam = make_family("sensor-pressure", lot="B")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", *fam.input_names, *fam.output_names])
        for i, (unit, n) in enumerate(rows_per_unit.items()):
            t = fam.sample_task(np.random.default_rng(i), n, 0)
            for x, y in zip(t.x_support, t.y_support):
                w.writerow([unit, *x.tolist(), *y.tolist()])
    return str(path)


@pytest.fixture
def fleet(tmp_path):
    rows = {f"B{i:03d}": 23 for i in range(8)} | {f"S{i:03d}": 3 for i in range(5)}  # audited and 3-point units
    return _fleet_csv(tmp_path / "fleet.csv", rows)


def test_only_units_with_enough_rows_join_and_held_out_units_are_whole(fleet):
    mix = make_family("mixture", base="sensor-pressure", path=fleet, weight=1.0, min_rows=8, test_fraction=0.25)
    assert isinstance(mix, FleetMixture) and mix.input_names == ("bridge_output", "temperature")
    train, test = mix.table.units("train"), mix.table.units("test")
    assert sorted(train + test) == [f"B{i:03d}" for i in range(8)] and len(test) == 2 and not set(train) & set(test)
    rng = np.random.default_rng(0)
    seen = {mix.sample_task(rng, 3, 20, "train").info["unit"] for _ in range(200)}
    assert seen == set(train)  # weight 1: every task is a training unit, never a held-out one
    x, y = mix.table.unit_data(test[0])
    assert x.shape == (23, 2) and y.shape == (23, 1)  # all of a held-out unit's points stay together


def test_weight_is_the_share_of_fleet_tasks(fleet):
    rng = np.random.default_rng(1)
    for weight in (0.0, 0.3):
        mix = make_family("mixture", base="sensor-pressure", path=fleet, weight=weight, min_rows=23)
        n = 600
        fleet_tasks = sum("unit" in mix.sample_task(rng, 3, 20).info for _ in range(n))
        assert abs(fleet_tasks - weight * n) <= 4 * np.sqrt(n * weight * (1 - weight))  # binomial, 4 sigma
        if weight == 0:
            assert fleet_tasks == 0
    batch = mix.sample_batch(rng, 16, 3, 20)
    assert batch.x_support.shape == (16, 3, 2) and batch.y_query.shape == (16, 20, 1)


def test_mixture_refusals_are_one_sentence(fleet, tmp_path):
    with pytest.raises(InputError, match="weight=1.5 must be a probability"):
        make_family("mixture", base="sensor-pressure", path=fleet, weight=1.5)
    with pytest.raises(InputError, match="1 unit.* have at least 23 rows; a model update needs two or more"):
        make_family("mixture", base="sensor-pressure", path=_fleet_csv(tmp_path / "one.csv", {"a": 23, "b": 3}),
                    min_rows=23)
    with pytest.raises(InputError, match="no column 'adc_counts'"):
        make_family("mixture", base="sensor-ntc", path=fleet)
