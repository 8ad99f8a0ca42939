"""A mixture of an original task family and a fleet's per-unit table: what a model update meta-trains on.

Each task is drawn from the fleet table (the units devices calibrated, as ``metaedge kb export-units`` writes
them) with probability ``weight``, else from the original family. The fleet part is a :class:`TableFamily`, so
its units are split into train / test *by unit*: a held-out unit is never seen in training, and never split into
points. Only units with at least ``min_rows`` rows join the fleet (a unit with no more points than the shot count
has nothing left to score an adaptation on).

The mixture has the original family's interface (input and output names, units, metric); the trainer keeps the
normaliser of the run it starts from (``TrainConfig.init_from``), so the mixture's own statistics never matter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .base import Split, Task, TaskFamily, make_family, register_family
from .table import TableFamily, read_table


@register_family("mixture")
class FleetMixture(TaskFamily):
    """Tasks from ``base`` or, with probability ``weight``, from the fleet table at ``path``.

    Args:
        base: the original family's registry name; ``base_options`` its options.
        path: the per-unit table (CSV: a ``group`` column, then the base family's input and output columns).
        weight: probability in [0, 1] that a task is a fleet unit.
        min_rows: units with fewer rows are left out of the fleet (use shots + queries of the training).
        group: the unit id column.
        test_fraction, split_seed, test_units: how fleet units are held out (:class:`~.table.UnitSplit`).
    """

    name = "mixture"

    def __init__(self, base: str, path: str | Path, weight: float = 0.5, min_rows: int = 1,
                 base_options: dict[str, Any] | None = None, group: str = "unit", test_fraction: float = 0.25,
                 split_seed: int = 0, test_units: list[Any] | None = None) -> None:
        if not 0.0 <= float(weight) <= 1.0:
            raise InputError(f"weight={weight} must be a probability in [0, 1]")
        self.base = make_family(base, **(base_options or {}))
        if self.base.task_kind != "regression" or self.base.output_dim != 1 or len(self.base.input_shape) != 1:
            raise InputError(f"a fleet mixture needs a single-output regression family over feature vectors; "
                             f"{base!r} is not one")
        units, x, y = read_table(path, group, self.base.input_names, self.base.output_names[0])
        ids, counts = np.unique(units, return_counts=True)
        keep = np.isin(units, ids[counts >= int(min_rows)])
        if len(np.unique(units[keep])) < 2:
            raise InputError(f"{path}: {len(np.unique(units[keep]))} unit(s) have at least {min_rows} rows; a model "
                             "update needs two or more (one to train on, one held out): feed back more audited units")
        self.table = TableFamily.from_arrays(
            units[keep], x[keep], y[keep], self.base.input_names, self.base.output_names[0], source=str(path),
            primary_input=self.base.primary_input, input_units=self.base.input_units,
            output_units=self.base.output_units, test_fraction=test_fraction, split_seed=split_seed,
            test_units=test_units)
        self.weight = float(weight)
        self.min_rows = int(min_rows)
        for attr in ("input_shape", "output_dim", "input_names", "output_names", "input_units", "output_units",
                     "primary_input", "normalize", "calibration", "metric"):
            setattr(self, attr, getattr(self.base, attr))

    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train") -> Task:
        """A fleet unit of ``split`` with probability ``weight``, else a task of the original family."""
        if rng.random() < self.weight:
            return self.table.sample_task(rng, shots, queries, split)
        return self.base.sample_task(rng, shots, queries, split)

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "name": self.name, "base": self.base.describe(), "weight": self.weight,
                "min_rows": self.min_rows, "fleet": self.table.describe()}
