"""Per-unit table families: generic CSV behaviour on a tiny file, then the real PurpleAir / C-MAPSS data."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from metaedge.sdk.tasks import TableFamily, find_data_dir, make_family

# Unit id -> number of rows; unit 9 is small so that large draws leave it out.
ROWS = {1: 12, 2: 15, 3: 20, 4: 11, 5: 30, 6: 14, 7: 16, 8: 13, 9: 3}


def write_table(path: Path, rows: dict[int, int] = ROWS, bad: tuple[int, str, str] | None = None) -> Path:
    """A CSV with columns ``unit, rid, a, y``: ``rid`` is a global row id, ``y = 2 a + unit``.

    ``bad = (row, column, text)`` overwrites one cell (row counted from 0) to test validation.
    """
    lines = [["unit", "rid", "a", "y"]]
    for unit, n in rows.items():
        for i in range(n):
            a = 0.5 * i
            lines.append([str(unit), str(len(lines) - 1), str(a), str(2 * a + unit)])
    if bad is not None:
        row, column, text = bad
        lines[row + 1][lines[0].index(column)] = text
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        csv.writer(f).writerows(lines)
    return path


def table(path: Path, **options) -> TableFamily:
    return TableFamily(path, group="unit", x_columns=["rid", "a"], y_column="y", **options)


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return write_table(tmp_path / "fleet.csv")


def test_split_is_disjoint_by_unit_and_deterministic(csv_path: Path) -> None:
    fam = table(csv_path, test_fraction=0.25, val_fraction=0.2, split_seed=3)
    splits = {s: fam.units(s) for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == sorted(ROWS)  # every unit once, no overlap
    assert len(splits["test"]) == 2 and len(splits["val"]) == 2
    again = table(csv_path, test_fraction=0.25, val_fraction=0.2, split_seed=3)
    assert {s: again.units(s) for s in splits} == splits
    other = [table(csv_path, split_seed=seed).units("test") for seed in range(5)]
    assert len({tuple(t) for t in other}) > 1  # the seed matters
    assert table(csv_path, test_units=["4", 7]).units("test") == [4, 7]  # ids as strings or ints


def test_folds_cover_every_unit_once(csv_path: Path) -> None:
    tests = [table(csv_path, folds=3, fold=k).units("test") for k in range(3)]
    assert sorted(sum(tests, [])) == sorted(ROWS)
    assert [len(t) for t in tests] == [3, 3, 3]
    fam = table(csv_path, folds=3, fold=1)
    assert not set(fam.units("train")) & set(fam.units("test"))


def test_sample_task_shapes_and_no_overlap(csv_path: Path) -> None:
    fam = table(csv_path)
    assert fam.input_shape == (2,) and fam.input_names == ("rid", "a") and fam.output_names == ("y",)
    assert fam.normalize and fam.calibration
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for _ in range(20):
            t = fam.sample_task(rng, shots=4, queries=6, split=split)
            assert t.x_support.shape == (4, 2) and t.y_support.shape == (4, 1)
            assert t.x_query.shape == (6, 2) and t.y_query.shape == (6, 1)
            arrays = (t.x_support, t.y_support, t.x_query, t.y_query)
            assert all(a.dtype == np.float32 for a in arrays)
            unit = t.info["unit"]
            assert unit in fam.units(split) and t.info["rows"] == ROWS[unit]
            rid_s, rid_q = set(t.x_support[:, 0]), set(t.x_query[:, 0])
            assert len(rid_s) == 4 and len(rid_q) == 6 and not rid_s & rid_q  # no replacement, no overlap
            x = np.concatenate([t.x_support, t.x_query])
            y = np.concatenate([t.y_support, t.y_query])
            np.testing.assert_allclose(y[:, 0], 2 * x[:, 1] + unit)  # all rows come from that unit
    batch = fam.sample_batch(rng, n_tasks=5, shots=2, queries=3)
    assert batch.x_support.shape == (5, 2, 2) and batch.y_query.shape == (5, 3, 1)


def test_small_units_are_not_eligible(csv_path: Path) -> None:
    fam = table(csv_path, test_units=[9, 5])
    rng = np.random.default_rng(1)
    assert {fam.sample_task(rng, 5, 5, "test").info["unit"] for _ in range(20)} == {5}
    with pytest.raises(ValueError, match="no unit of the 'test' split"):
        fam.sample_task(rng, 20, 20, "test")
    with pytest.raises(ValueError, match="'val' split"):
        fam.sample_task(rng, 1, 1, "val")  # val_fraction=0: empty split


def test_unit_task_uses_all_remaining_rows(csv_path: Path) -> None:
    fam = table(csv_path)
    t = fam.unit_task(3, shots=5, rng=np.random.default_rng(0))
    assert t.x_support.shape == (5, 2) and t.x_query.shape == (15, 2) and t.y_query.shape == (15, 1)
    rids = np.concatenate([t.x_support[:, 0], t.x_query[:, 0]])
    np.testing.assert_array_equal(np.sort(rids), np.sort(fam.unit_data(3)[0][:, 0]))
    assert np.all(np.diff(t.x_query[:, 0]) > 0)  # query keeps file order
    assert t.info == {"unit": 3, "rows": 20}
    with pytest.raises(ValueError, match="shots=20"):
        fam.unit_task(3, shots=20, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown unit"):
        fam.unit_task(42, shots=1, rng=np.random.default_rng(0))


def test_gzip_and_make_family(tmp_path: Path) -> None:
    path = write_table(tmp_path / "fleet.csv.gz")
    fam = make_family("table", path=path, group="unit", x_columns=["a"], y_column="y", primary_input=0)
    assert fam.name == "table" and fam.units() == sorted(ROWS)
    assert fam.known_formulas() == {}


def test_from_arrays_matches_csv(csv_path: Path) -> None:
    fam = table(csv_path)
    x = np.concatenate([fam.unit_data(u)[0] for u in fam.units()])
    y = np.concatenate([fam.unit_data(u)[1] for u in fam.units()])
    units = np.repeat(fam.units(), [ROWS[u] for u in fam.units()])
    same = TableFamily.from_arrays(units, x, y[:, 0], x_names=["rid", "a"], y_name="y")
    assert {s: same.units(s) for s in ("train", "test")} == {s: fam.units(s) for s in ("train", "test")}


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ((4, "a", "nan"), r"column 'a', row 5 \(line 6\)"),
        ((0, "y", "abc"), r"column 'y', row 1 \(line 2\)"),
        ((2, "rid", ""), r"column 'rid', row 3"),
        ((7, "unit", ""), r"column 'unit', row 8"),
    ],
)
def test_bad_values_are_reported(tmp_path: Path, bad: tuple[int, str, str], match: str) -> None:
    path = write_table(tmp_path / "bad.csv", bad=bad)
    with pytest.raises(ValueError, match=match) as err:
        table(path)
    assert str(path) in str(err.value)


def test_missing_file_and_column(tmp_path: Path, csv_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        table(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="no column 'b'"):
        TableFamily(csv_path, group="unit", x_columns=["a", "b"], y_column="y")


def test_bad_split_options(csv_path: Path) -> None:
    with pytest.raises(ValueError, match="folds"):
        table(csv_path, fold=1)
    with pytest.raises(ValueError, match="fold=3"):
        table(csv_path, folds=3, fold=3)
    with pytest.raises(ValueError, match="not in the table"):
        table(csv_path, test_units=[99])
    with pytest.raises(ValueError, match="no unit is left for training"):
        table(csv_path, test_units=list(range(1, 9)), val_fraction=0.1)


def test_find_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mydata").mkdir()
    monkeypatch.setenv("METAEDGE_DATA", str(tmp_path))
    assert find_data_dir("mydata") == tmp_path / "mydata"
    with pytest.raises(FileNotFoundError, match="METAEDGE_DATA"):
        find_data_dir("absent")


@pytest.mark.data
def test_purpleair_units_and_epa_formula(real_family) -> None:
    fam = real_family("purpleair", "purpleair_colocation", folds=4, fold=0)
    assert len(fam.units()) == 12 and len(fam.units("test")) == 3
    assert fam.input_names == ("A_B_Avg", "humidity_a", "temp_Celsius", "dewPoint")
    x = np.concatenate([fam.unit_data(u)[0] for u in fam.units()])
    y = np.concatenate([fam.unit_data(u)[1] for u in fam.units()])
    assert x.shape == (3813, 4) and y.shape == (3813, 1)
    pred = fam.known_formulas()["epa_barkjohn2021"](x)
    assert pred.shape == (3813, 1)
    rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - y) ** 2)))
    assert rmse == pytest.approx(2.72, abs=0.01)  # the data README's figure for Barkjohn et al. 2021


@pytest.mark.data
def test_cmapss_fd001(real_family) -> None:
    fam = real_family("cmapss", "cmapss", subset="FD001")
    assert len(fam.units()) == 100 and fam.input_shape == (17,)
    y = np.concatenate([fam.unit_data(u)[1] for u in fam.units()])
    assert y.shape == (20631, 1) and y.max() == 125 and y.min() == 0
    x, rul = fam.unit_data(1)
    assert rul[-1, 0] == 0 and rul[0, 0] == 125  # engine 1 runs 192 cycles: capped early, 0 at failure
    t = fam.sample_task(np.random.default_rng(0), 10, 20, "test")
    assert t.x_support.shape == (10, 17) and t.info["unit"] in fam.units("test")
