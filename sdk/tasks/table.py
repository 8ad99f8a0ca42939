"""Per-unit tables: one task = one physical unit (a sensor, an engine) of a fleet.

A table holds rows ``(unit, x_1..x_d, y)``. Units are split into disjoint train / val / test sets
*by unit*, so a held-out unit is never seen during meta-training; a task draws its support and query
rows from a single unit. Three families live here:

- ``"table"``: any CSV (plain or ``.gz``) with a unit column, input columns and a target column;
- ``"purpleair"``: PurpleAir PM2.5 sensors colocated with reference monitors (daily means, 12 units);
- ``"cmapss"``: NASA C-MAPSS turbofan engines, target = remaining useful life (RUL).

CSV and C-MAPSS loading both end in the same ``(units, x, y)`` arrays handed to
:meth:`TableFamily.from_arrays` / :meth:`TableFamily._setup`, so splitting and sampling exist once.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ...errors import InputError, MissingError
from .base import Split, Task, TaskFamily, register_family

Unit = int | str
Formula = Callable[[np.ndarray], np.ndarray]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def find_data_dir(name: str) -> Path:
    """The folder ``shared/data/<name>`` holding a data set.

    ``$METAEDGE_DATA`` (the ``shared/data`` folder itself) wins when set; otherwise the folders above
    the current directory and above this source file are searched for ``shared/data/<name>``, which
    finds ``../shared/data`` from the repository root both in a checkout and in an editable install.
    """
    env = os.environ.get("METAEDGE_DATA")
    if env:
        found = Path(env).expanduser() / name
        if found.is_dir():
            return found
        raise MissingError(
            f"METAEDGE_DATA={env} has no folder {name!r}; point METAEDGE_DATA at the shared/data folder "
            f"that holds {name!r}"
        )
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            found = folder / "shared" / "data" / name
            if found.is_dir():
                return found
    raise MissingError(
        f"data folder shared/data/{name} was not found above {starts[0]} or above {starts[1]}; set "
        f"METAEDGE_DATA to the shared/data folder that holds {name!r}"
    )


@dataclass(frozen=True)
class UnitSplit:
    """How a fleet's units are divided into disjoint train / val / test sets.

    With ``folds``/``fold``, the units are shuffled once by ``split_seed`` and cut into ``folds``
    near-equal parts; part ``fold`` is the test set (k-fold cross-validation over a small fleet).
    Otherwise ``test_units`` names the test set, or ``test_fraction`` of the units are drawn at random.
    ``val_fraction`` (of all units) is then taken from the remaining units; the rest are train units.
    """

    test_fraction: float = 0.25
    test_units: Sequence[Unit] | None = None
    val_fraction: float = 0.0
    split_seed: int = 0
    folds: int | None = None
    fold: int | None = None

    def assign(self, units: Sequence[Unit]) -> dict[Split, list[Unit]]:
        """Split ``units`` (sorted, distinct); each returned list is sorted."""
        n = len(units)
        # Shuffle by index so the order depends only on (n, split_seed), not on the id type.
        order = [units[i] for i in np.random.default_rng(self.split_seed).permutation(n)]
        if self.folds is not None:
            if self.test_units is not None:
                raise InputError("pass either test_units or folds/fold, not both")
            if not 2 <= self.folds <= n:
                raise InputError(f"folds={self.folds} must be between 2 and the number of units ({n})")
            if self.fold is None or not 0 <= self.fold < self.folds:
                raise InputError(f"fold={self.fold} must be an integer in 0..{self.folds - 1} with folds set")
            test = [order[i] for i in np.array_split(np.arange(n), self.folds)[self.fold]]
        elif self.fold is not None:
            raise InputError(f"fold={self.fold} was given without folds; pass folds=<number of folds> too")
        elif self.test_units is not None:
            by_name = {str(u): u for u in units}
            unknown = [u for u in self.test_units if str(u) not in by_name]
            if unknown:
                raise InputError(f"test_units {unknown} are not in the table; known units: {list(units)}")
            test = [by_name[str(u)] for u in self.test_units]
        else:
            test = order[: _fraction_count(self.test_fraction, n, "test_fraction")]
        taken = set(test)
        rest = [u for u in order if u not in taken]
        n_val = _fraction_count(self.val_fraction, n, "val_fraction")
        val, train = rest[:n_val], rest[n_val:]
        if not train:
            raise InputError(
                f"no unit is left for training ({len(test)} test, {len(val)} val of {n} units); "
                "lower test_fraction/val_fraction or name fewer test_units"
            )
        return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def _fraction_count(fraction: float, n: int, what: str) -> int:
    """Units that ``fraction`` of ``n`` asks for; at least one when the fraction is positive."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"{what}={fraction} must be in [0, 1)")
    return max(1, round(fraction * n)) if fraction > 0 else 0


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first header name.
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def read_table(
    path: str | Path, group: str, x_columns: Sequence[str], y_column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a CSV (plain or ``.gz``) with a header row.

    Returns:
        units: ``(n,)`` unit ids as strings (column ``group``).
        x: ``(n, len(x_columns))`` float64.
        y: ``(n,)`` float64.

    Raises:
        ValueError: the file is missing, lacks a column, or holds an empty, non-numeric or
            non-finite value (the message names the file, column and row).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass the path of an existing CSV file (.csv or .csv.gz)")
    wanted = [group, *x_columns, y_column]
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise InputError(
                f"{path}: no column {missing[0]!r} in the header {header}; fix the column name or the file"
            )
        index = [header.index(c) for c in wanted]
        rows: list[list[str]] = []
        lines: list[int] = []
        for fields in reader:
            if not fields or all(not v.strip() for v in fields):
                continue  # blank line, e.g. a trailing newline pair
            if len(fields) < len(header):
                raise InputError(
                    f"{path}: line {reader.line_num} has {len(fields)} fields but the header has "
                    f"{len(header)}; fix that line"
                )
            rows.append([fields[i].strip() for i in index])
            lines.append(reader.line_num)
    if not rows:
        raise InputError(f"{path}: the file has a header but no data rows; point path at a filled table")
    cells = np.array(rows, dtype=object)  # (n, 2 + d): group, x..., y
    for r, unit in enumerate(cells[:, 0]):
        if not unit:
            raise InputError(
                f"{path}: column {group!r}, row {r + 1} (line {lines[r]}) is empty; fill in the unit id"
            )
    values = np.empty((len(rows), len(wanted) - 1), dtype=np.float64)
    for j, name in enumerate(wanted[1:]):
        column = cells[:, j + 1]
        try:
            values[:, j] = column.astype(np.float64)
        except ValueError:
            values[:, j] = [_to_float(v) for v in column]  # NaN marks the unparsable cells, found below
        bad = np.flatnonzero(~np.isfinite(values[:, j]))
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"{path}: column {name!r}, row {r + 1} (line {lines[r]}) holds {column[r]!r}, not a finite "
                "number; fix or drop that row"
            )
    return cells[:, 0].astype(str), values[:, :-1], values[:, -1]


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _canonical_units(raw: np.ndarray) -> list[Unit]:
    """Unit ids as plain Python ints when every id is an integer, else as strings (JSON-able, sortable)."""
    ints: list[Unit] = []
    for v in raw.tolist():
        if isinstance(v, str):
            text = v.strip()
            if not text.lstrip("+-").isdigit():
                return [str(u) for u in raw.tolist()]
            ints.append(int(text))
        elif float(v).is_integer():
            ints.append(int(v))
        else:
            return [str(u) for u in raw.tolist()]
    return ints


@register_family("table")
class TableFamily(TaskFamily):
    """Tasks from the per-unit records of a table: one task = rows of one unit.

    Args:
        path: CSV file (plain or ``.gz``) with a header row.
        group: the unit id column.
        x_columns: input columns, in model input order.
        y_column: the target column.
        test_fraction: share of the units held out as test (ignored with ``test_units`` or ``folds``).
        test_units: explicit test units.
        val_fraction: share of all units held out as val, taken from the non-test units.
        split_seed: seed of the unit shuffle; a seed fixes the split.
        folds, fold: k-fold by unit; fold ``fold``'s units are the test split.
        primary_input: index of the raw sensor reading among ``x_columns`` (for classic calibration).
        input_units, output_units: physical units of the columns, for reports.
    """

    name = "table"
    normalize = True
    calibration = True

    def __init__(
        self,
        path: str | Path,
        group: str,
        x_columns: Sequence[str],
        y_column: str,
        test_fraction: float = 0.25,
        test_units: Sequence[Unit] | None = None,
        val_fraction: float = 0.0,
        split_seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
        primary_input: int = 0,
        input_units: Sequence[str] | None = None,
        output_units: Sequence[str] | None = None,
    ) -> None:
        units, x, y = read_table(path, group, x_columns, y_column)
        split = UnitSplit(test_fraction, test_units, val_fraction, split_seed, folds, fold)
        self._setup(
            units, x, y, x_columns, y_column, split, str(path), primary_input, input_units, output_units
        )

    @classmethod
    def from_arrays(
        cls,
        units: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        x_names: Sequence[str],
        y_name: str,
        source: str = "arrays",
        primary_input: int = 0,
        input_units: Sequence[str] | None = None,
        output_units: Sequence[str] | None = None,
        **split_options: Any,
    ) -> TableFamily:
        """A family over already-loaded columns: ``units (n,)``, ``x (n, d)``, ``y (n,)`` or ``(n, 1)``.

        ``split_options`` are :class:`UnitSplit`'s fields (``test_fraction``, ``folds``, ``fold``...).
        """
        family = cls.__new__(cls)
        split = UnitSplit(**split_options)
        family._setup(units, x, y, x_names, y_name, split, source, primary_input, input_units, output_units)
        return family

    def _setup(
        self,
        units: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        x_names: Sequence[str],
        y_name: str,
        split: UnitSplit,
        source: str,
        primary_input: int = 0,
        input_units: Sequence[str] | None = None,
        output_units: Sequence[str] | None = None,
    ) -> None:
        """Group rows by unit and split the units; every loader ends here."""
        units = np.asarray(units)
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        d = len(x_names)
        if units.ndim != 1 or x.shape != (len(units), d) or y.shape != (len(units), 1):
            raise InputError(
                f"{source}: expected units (n,), x (n, {d}) and y (n,) arrays, got {units.shape}, {x.shape} "
                f"and {y.shape}; pass one row per sample and one x column per name"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise InputError(f"{source}: x or y holds NaN or infinite values; drop or fill those rows first")
        if not 0 <= primary_input < d:
            raise InputError(f"primary_input={primary_input} must index one of the inputs {list(x_names)}")
        ids = _canonical_units(units)
        rows: dict[Unit, list[int]] = {}
        for i, u in enumerate(ids):
            rows.setdefault(u, []).append(i)
        # float32 once here: every task slices these arrays, in the file's (time) order per unit.
        self._x = {u: x[r].astype(np.float32) for u, r in rows.items()}
        self._y = {u: y[r].astype(np.float32) for u, r in rows.items()}
        self._by_name = {str(u): u for u in rows}
        self.split = split
        self.source = source
        self._splits = split.assign(sorted(rows))
        self.input_shape = (d,)
        self.input_names = tuple(x_names)
        self.output_names = (y_name,)
        self.input_units = tuple(input_units) if input_units is not None else ("",) * d
        self.output_units = tuple(output_units) if output_units is not None else ("",)
        self.primary_input = primary_input

    def units(self, split: Split | None = None) -> list[Unit]:
        """Sorted unit ids of ``split`` (all units when ``None``)."""
        if split is None:
            return sorted(self._x)
        if split not in self._splits:
            raise InputError(f"unknown split {split!r}; use one of {SPLITS}")
        return list(self._splits[split])

    def unit_data(self, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
        """All rows of ``unit`` in file order: x ``(n, d)`` float32, y ``(n, 1)`` float32."""
        u = self._unit(unit)
        return self._x[u], self._y[u]

    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train") -> Task:
        """A uniformly drawn eligible unit of ``split``; ``shots`` + ``queries`` distinct rows of it."""
        if shots < 0 or queries < 0:
            raise InputError(f"shots={shots} and queries={queries} must be non-negative")
        need = shots + queries
        pool = self.units(split)
        eligible = [u for u in pool if len(self._y[u]) >= need]
        if not eligible:
            largest = max((len(self._y[u]) for u in pool), default=0)
            raise InputError(
                f"no unit of the {split!r} split has the {need} rows that shots + queries ask for "
                f"({len(pool)} units, the largest has {largest} rows); ask for fewer shots/queries or "
                "put larger units into this split"
            )
        unit = eligible[int(rng.integers(len(eligible)))]
        pick = rng.permutation(len(self._y[unit]))[:need]  # without replacement: support and query disjoint
        return self._task(unit, pick[:shots], pick[shots:])

    def unit_task(self, unit: Unit, shots: int, rng: np.random.Generator) -> Task:
        """``shots`` random support rows of ``unit``; query = all its other rows, in file order.

        The query length varies per unit, so these tasks are scored one at a time, not stacked.
        """
        u = self._unit(unit)
        n = len(self._y[u])
        if not 0 <= shots < n:
            raise InputError(f"unit {u!r} has {n} rows, so shots={shots} must be in 0..{n - 1}; use fewer")
        support = rng.permutation(n)[:shots]
        query = np.setdiff1d(np.arange(n), support)  # sorted, i.e. file order
        return self._task(u, support, query)

    def _task(self, unit: Unit, support: np.ndarray, query: np.ndarray) -> Task:
        x, y = self._x[unit], self._y[unit]
        return Task(x[support], y[support], x[query], y[query], {"unit": unit, "rows": len(y)})

    def _unit(self, unit: Unit) -> Unit:
        # Accept 101259 and "101259" alike: CLI options and JSON configs arrive as strings.
        if str(unit) not in self._by_name:
            raise InputError(f"unknown unit {unit!r}; known units: {self.units()}")
        return self._by_name[str(unit)]

    def known_formulas(self) -> dict[str, Formula]:
        """Fixed published formulas ``y = f(x)``, ``x (n, d) -> (n, 1)``, used as baselines; none here."""
        return {}

    def describe(self) -> dict[str, Any]:
        test_units = None if self.split.test_units is None else [self._unit(u) for u in self.split.test_units]
        return {
            **super().describe(),
            "source": self.source,
            "split": {**asdict(self.split), "test_units": test_units},
            "units": {s: list(us) for s, us in self._splits.items()},
        }


PURPLEAIR_FILE = "purpleair_daily_12units.csv"


@register_family("purpleair")
class PurpleAir(TableFamily):
    """PurpleAir PA-II PM2.5 sensors beside regulatory monitors; one task = one sensor's days.

    x = (``A_B_Avg`` raw PM2.5 ug/m3, ``humidity_a`` %, ``temp_Celsius`` degC, ``dewPoint`` degC),
    y = reference ``conc`` ug/m3. ``path`` defaults to ``shared/data/purpleair_colocation/`` (see
    :func:`find_data_dir`); ``split_options`` as in :class:`TableFamily` (12 units: e.g. ``folds=4``).
    """

    name = "purpleair"
    X_COLUMNS = ("A_B_Avg", "humidity_a", "temp_Celsius", "dewPoint")

    def __init__(self, path: str | Path | None = None, **split_options: Any) -> None:
        if path is None:
            path = find_data_dir("purpleair_colocation") / PURPLEAIR_FILE
        super().__init__(
            path,
            "sensor_index",
            self.X_COLUMNS,
            "conc",
            input_units=("ug/m3", "%", "degC", "degC"),
            output_units=("ug/m3",),
            **split_options,
        )

    def known_formulas(self) -> dict[str, Formula]:
        """The EPA US-wide correction (Barkjohn et al. 2021): ``0.524*A_B_Avg - 0.0862*RH + 5.75``."""
        pm, rh = self.input_names.index("A_B_Avg"), self.input_names.index("humidity_a")

        def epa(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            return (0.524 * x[:, pm] - 0.0862 * x[:, rh] + 5.75)[:, None].astype(np.float32)

        return {"epa_barkjohn2021": epa}


#: The 14 sensors that vary in FD001/FD003 (the other 7 are constant), as most C-MAPSS papers use.
CMAPSS_SENSORS = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
CMAPSS_SUBSETS = ("FD001", "FD002", "FD003", "FD004")


def load_cmapss(path: str | Path, rul_cap: float | None = 125) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a C-MAPSS training file (``train_FD00x.txt[.gz]``: 26 space-separated columns).

    Returns:
        units: ``(n,)`` int engine ids.
        x: ``(n, 17)`` float64, the sensors of :data:`CMAPSS_SENSORS` then ``op_setting_1..3``.
        y: ``(n,)`` float64 RUL = ``max_cycle(unit) - cycle``, clipped at ``rul_cap`` (None: no clip).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass a C-MAPSS train_FD00x.txt(.gz) file")
    try:
        data = np.loadtxt(path, ndmin=2)  # loadtxt decompresses .gz itself
    except ValueError as err:
        raise InputError(f"{path}: not a numeric C-MAPSS table ({err}); pass an original train file") from err
    if data.shape[1] != 26:
        raise InputError(f"{path}: expected 26 columns per row, got {data.shape[1]}; pass an original file")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: holds NaN or infinite values; pass an original train file")
    units = data[:, 0].astype(np.int64)
    cycle = data[:, 1]
    _, inverse = np.unique(units, return_inverse=True)
    last = np.zeros(inverse.max() + 1)
    np.maximum.at(last, inverse, cycle)
    rul = last[inverse] - cycle
    if rul_cap is not None:
        # Piecewise-linear target: early cycles of a healthy engine carry no wear signal to regress on.
        rul = np.minimum(rul, rul_cap)
    columns = [4 + s for s in CMAPSS_SENSORS] + [2, 3, 4]  # sensor_k is column 4 + k; op settings 2..4
    return units, data[:, columns], rul


@register_family("cmapss")
class CMAPSS(TableFamily):
    """NASA C-MAPSS turbofan engines (simulated); one task = one engine's cycles, y = capped RUL.

    Args:
        subset: ``"FD001"`` .. ``"FD004"``; the training file (run-to-failure) is loaded.
        rul_cap: clip the RUL target at this many cycles (None: no clip).
        path: the file, default ``shared/data/cmapss/train_<subset>.txt.gz``.
        split_options: as in :class:`TableFamily` (``test_fraction``, ``folds``, ``fold``...).
    """

    name = "cmapss"
    # The target is a lifetime, not a reading of the primary sensor: a 2-point/polynomial
    # calibration against one sensor is no meaningful baseline here.
    calibration = False

    def __init__(
        self,
        subset: str = "FD001",
        rul_cap: float | None = 125,
        path: str | Path | None = None,
        primary_input: int = 0,
        **split_options: Any,
    ) -> None:
        if subset not in CMAPSS_SUBSETS:
            raise InputError(f"unknown C-MAPSS subset {subset!r}; use one of {CMAPSS_SUBSETS}")
        if path is None:
            path = find_data_dir("cmapss") / f"train_{subset}.txt.gz"
        self.subset, self.rul_cap = subset, rul_cap
        units, x, y = load_cmapss(path, rul_cap)
        names = [f"sensor_{s}" for s in CMAPSS_SENSORS] + [f"op_setting_{i}" for i in (1, 2, 3)]
        split = UnitSplit(**split_options)
        self._setup(units, x, y, names, "RUL", split, str(path), primary_input, output_units=("cycles",))
