"""Few-shot classification families: the episode sampler, the .ts reader, image folders and Omniglot.

Everything runs on tiny synthetic data written to ``tmp_path``; the ``data``-marked tests at the end
load the real shared sets and skip when ``shared/data`` is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaedge.sdk.tasks import EpisodicFamily, make_family
from metaedge.sdk.tasks import episodes as episodes_module
from metaedge.sdk.tasks.episodes import sample_without_replacement
from metaedge.sdk.tasks.timeseries import read_ts, to_fixed_length

# ---------------------------------------------------------------- episode sampler


def synthetic(n_classes: int = 10, per_class: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled samples whose features are (class id, sample id): x ``(N, 2)``, y ``(N,)``."""
    y = np.repeat(np.arange(n_classes) * 3 + 100, per_class)  # ids need not be 0..C-1
    x = np.stack([y, np.arange(len(y))], axis=1).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


@pytest.fixture
def family() -> EpisodicFamily:
    return EpisodicFamily.from_arrays({"train": synthetic(), "test": synthetic(6, 5, seed=1)}, ways=5, name="toy")


def test_episode_layout(family: EpisodicFamily) -> None:
    assert (family.task_kind, family.output_dim, family.input_shape, family.metric) == (
        "classification",
        5,
        (2,),
        "accuracy",
    )
    assert family.normalize is False
    b = family.sample_batch(np.random.default_rng(0), 16, 2, 3)
    assert b.x_support.shape == (16, 10, 2) and b.x_query.shape == (16, 15, 2)
    assert b.y_support.dtype == np.int64 and b.x_support.dtype == np.float32
    np.testing.assert_array_equal(b.y_support, np.tile(np.repeat(np.arange(5), 2), (16, 1)))  # class-major
    np.testing.assert_array_equal(b.y_query, np.tile(np.repeat(np.arange(5), 3), (16, 1)))
    sorted_labels = set()
    for t in range(16):
        chosen = b.info[t]["classes"]
        assert len(set(chosen)) == 5 and set(chosen) <= set(family.classes("train"))
        # every sample of label j comes from the class that label j stands for
        np.testing.assert_array_equal(b.x_support[t, :, 0], np.repeat(chosen, 2))
        np.testing.assert_array_equal(b.x_query[t, :, 0], np.repeat(chosen, 3))
        ids = np.concatenate([b.x_support[t, :, 1], b.x_query[t, :, 1]])
        assert len(np.unique(ids)) == 25  # no sample twice, support and query disjoint
        sorted_labels.add(tuple(chosen) == tuple(sorted(chosen)))
    assert False in sorted_labels  # labels are assigned to the classes in a random order


def test_episodes_deterministic_and_override(family: EpisodicFamily) -> None:
    a = family.sample_batch(np.random.default_rng(5), 4, 1, 2, "test")
    b = family.sample_batch(np.random.default_rng(5), 4, 1, 2, "test")
    c = family.sample_batch(np.random.default_rng(6), 4, 1, 2, "test")
    np.testing.assert_array_equal(a.x_query, b.x_query)
    assert a.info == b.info and not np.array_equal(a.x_query, c.x_query)
    one = family.sample_batch(np.random.default_rng(5), 1, 1, 2, "test")
    t = family.sample_task(np.random.default_rng(5), 1, 2, "test")
    np.testing.assert_array_equal(t.x_query, one.x_query[0])  # sample_task = a batch of one
    t3 = family.sample_task(np.random.default_rng(0), 4, 1, ways=3)
    assert t3.x_support.shape == (12, 2) and t3.y_query.tolist() == [0, 1, 2] and family.output_dim == 5
    assert family.sample_batch(np.random.default_rng(0), 2, 1, 1, ways=10).x_support.shape == (2, 10, 2)


def test_episode_errors(family: EpisodicFamily) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="has 6 of 6 classes with at least 2 samples .* 7-way"):
        family.sample_task(rng, 1, 1, "test", ways=7)
    with pytest.raises(ValueError, match="0 of 6 classes with at least 6 samples"):
        family.sample_task(rng, 3, 3, "test")  # 5 samples per test class
    with pytest.raises(ValueError, match="no split 'val'"):
        family.sample_task(rng, 1, 1, "val")
    with pytest.raises(ValueError, match="ways=1"):
        family.sample_task(rng, 1, 1, ways=1)
    with pytest.raises(ValueError, match="labels"):
        EpisodicFamily.from_arrays({"train": (np.zeros((4, 2)), np.zeros(4))})
    with pytest.raises(ValueError, match="input shape"):
        EpisodicFamily.from_arrays({"train": synthetic(), "test": (np.zeros((3, 5)), np.arange(3))})


def test_helpers_uint8_and_large_pools(family: EpisodicFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    assert family.classes("test") == [100, 103, 106, 109, 112, 115]
    assert family.class_counts("train") == {100 + 3 * c: 8 for c in range(10)}
    x, y = family.arrays("train")
    assert x.shape == (80, 2) and (np.diff(y) >= 0).all() and (x[:, 0] == y).all()
    json.dumps(family.describe())
    images = np.full((12, 1, 2, 2), 255, dtype=np.uint8)
    u8 = EpisodicFamily.from_arrays({"train": (images, np.arange(12) % 3)}, ways=3)
    b = u8.sample_batch(np.random.default_rng(0), 2, 2, 2)
    assert b.x_support.dtype == np.float32 and b.x_support.max() == 1.0
    monkeypatch.setattr(episodes_module, "_MAX_KEYS", 10)  # force the per-row fallback
    picks = sample_without_replacement(np.random.default_rng(0), np.array([50, 7, 9]), 7)
    assert picks.shape == (3, 7) and all(len(set(p)) == 7 for p in picks.tolist())
    assert picks[1].max() < 7 and picks[2].max() < 9


# ---------------------------------------------------------------- .ts reader and UCR families

TS_HEADER = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate {uni}
{dims}@equalLength false
@classLabel true {labels}
@data
"""


def write_ts(path: Path, rows: list[str], labels: str = "a b c", dims: int = 1) -> Path:
    uni = "true" if dims == 1 else "false"
    header = TS_HEADER.format(uni=uni, dims="" if dims == 1 else f"@dimensions {dims}\n", labels=labels)
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_read_ts_univariate_variable_length(tmp_path: Path) -> None:
    ts = read_ts(write_ts(tmp_path / "u.ts", ["0,?,2,4,NaN,NaN:a", "1,2,3,4,5,6:b", "5,5,5:c"]))
    assert ts.labels == ["a", "b", "c"] and ts.class_labels == ("a", "b", "c") and ts.channels == 1
    assert ts.lines == [9, 10, 11] and ts.max_length == 6
    x = to_fixed_length(ts, 4, znorm=False)
    assert x.shape == (3, 1, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], [0, 1, 2, 4])  # NaN tail dropped, inner gap interpolated
    np.testing.assert_allclose(x[1, 0], [1, 8 / 3, 13 / 3, 6], rtol=1e-6)
    z = to_fixed_length(ts, 4)
    np.testing.assert_allclose(z[:2].mean(axis=2), 0, atol=1e-6)
    np.testing.assert_allclose(z[:2].std(axis=2), 1, atol=1e-5)
    assert (z[2] == 0).all()  # constant series: centred, not divided by 0


def test_read_ts_multivariate_and_errors(tmp_path: Path) -> None:
    ts = read_ts(write_ts(tmp_path / "m.ts", ["1,2,3:4,5,6:a", "1,2:3,4:b"], dims=2))
    assert ts.channels == 2 and to_fixed_length(ts, 5).shape == (2, 2, 5)
    bad = write_ts(tmp_path / "bad.ts", ["1,2,3:a", "1,x,3:b"])
    with pytest.raises(ValueError, match=r"bad\.ts, line 10: dimension 0 holds 'x'"):
        read_ts(bad)
    with pytest.raises(ValueError, match=r"line 10: 2 dimensions where earlier cases have 1"):
        read_ts(write_ts(tmp_path / "dims.ts", ["1,2:a", "1,2:3,4:b"]))
    with pytest.raises(ValueError, match=r"line 9: class label 'z'"):
        read_ts(write_ts(tmp_path / "label.ts", ["1,2:z"]))
    with pytest.raises(ValueError, match=r"line 9: dimension 0 holds no value"):
        to_fixed_length(read_ts(write_ts(tmp_path / "empty.ts", ["?,?:a"])), 3)


def write_ucr_pair(folder: Path, n_classes: int, per_class: int = 4) -> None:
    folder.mkdir()
    labels = " ".join(f"k{c}" for c in range(n_classes))
    rng = np.random.default_rng(0)
    for part in ("TRAIN", "TEST"):
        rows = []
        for c in range(n_classes):
            for _ in range(per_class):
                n = int(rng.integers(5, 12))
                rows.append(
                    ",".join(f"{v:.3f}" for v in np.sin(np.arange(n) * (c + 1)) + rng.normal(size=n)) + f":k{c}"
                )
        write_ts(folder / f"Toy_{part}.ts", rows, labels)


def test_ucr_split_policies(tmp_path: Path) -> None:
    write_ucr_pair(tmp_path / "few", 4)
    fam = make_family("ucr", path=tmp_path / "few")
    assert fam.split_by == "sample" and fam.ways == 4 and fam.input_shape == (1, 11)
    assert fam.class_counts("train") == fam.class_counts("test") == {c: 4 for c in range(4)}
    write_ucr_pair(tmp_path / "many", 10)
    fam = make_family("ucr", path=tmp_path / "many" / "Toy_TEST.ts", length=8)
    train, test = set(fam.classes("train")), set(fam.classes("test"))
    assert fam.split_by == "class" and not train & test and len(train) == 6 and len(test) == 4
    assert fam.ways == 4 and fam.input_shape == (1, 8) and fam.class_counts("test")[min(test)] == 8  # pooled
    t = fam.sample_task(np.random.default_rng(0), 2, 3, "test")
    assert t.x_support.shape == (8, 1, 8) and set(t.info["class_names"]) <= {f"k{c}" for c in test}
    same = make_family("ucr", dataset="toy", path=tmp_path / "many", length=8)
    assert same.classes("test") == fam.classes("test")  # the seed fixes the class split


# ---------------------------------------------------------------- image folders


def write_png(path: Path, value: int, size: tuple[int, int] = (10, 14), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0]) + ((3,) if mode == "RGB" else ()), value, dtype=np.uint8)
    Image.fromarray(a).save(path)


def test_image_folder(tmp_path: Path) -> None:
    for c in range(8):
        for i in range(3):
            write_png(tmp_path / "imgs" / f"class{c}" / f"{i}.png", 30 * c, mode="RGB" if i else "L")
    (tmp_path / "imgs" / "class0" / "notes.txt").write_text("not an image, ignored")
    fam = make_family("image-folder", path=tmp_path / "imgs", image_size=6, ways=2, test_fraction=0.25)
    assert fam.input_shape == (1, 6, 6) and fam.splits == ["train", "test"]
    assert len(fam.classes("test")) == 2 and not set(fam.classes("train")) & set(fam.classes("test"))
    t = fam.sample_task(np.random.default_rng(0), 1, 2, "test")
    assert t.x_support.dtype == np.float32 and 0 <= t.x_support.min() and t.x_support.max() <= 1
    for label, name in enumerate(t.info["class_names"]):
        np.testing.assert_allclose(t.x_support[label], 30 * int(name[5:]) / 255, atol=1 / 255)
    rgb = make_family("image-folder", path=tmp_path / "imgs", image_size=4, channels=3, val_fraction=0.25)
    assert rgb.input_shape == (3, 4, 4) and rgb.splits == ["train", "val", "test"]


def test_image_folder_explicit_splits_and_errors(tmp_path: Path) -> None:
    for split, classes in (("train", "abc"), ("test", "xy")):
        for c in classes:
            for i in range(2):
                write_png(tmp_path / "set" / split / c / f"{i}.bmp", 10)
    fam = make_family("image-folder", path=tmp_path / "set", ways=2)
    assert fam.splits == ["train", "test"] and [fam.class_names[c] for c in fam.classes("test")] == ["x", "y"]
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        make_family("image-folder", path=tmp_path / "none")
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"hollow/a: no image files"):
        make_family("image-folder", path=tmp_path / "hollow")
    write_png(tmp_path / "single" / "a" / "ok.png", 1)
    with pytest.raises(ValueError, match="only 1 class folder"):
        make_family("image-folder", path=tmp_path / "single")
    for c in "ab":
        write_png(tmp_path / "broken" / c / "ok.png", 1)
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png: cannot read it as an image"):
        make_family("image-folder", path=tmp_path / "broken")


# ---------------------------------------------------------------- Omniglot on a fake folder


def write_fake_omniglot(folder: Path, test: bool = False) -> list[str]:
    """6 characters x 3 drawers of 105x105 (True = background) and Vinyals-style split files."""
    names = [f"Alpha/character{i:02d}" for i in range(1, 7)]
    images = np.ones((6, 3, 105, 105), dtype=bool)
    for c in range(6):
        for d in range(3):
            images[c, d, 10 + 5 * c : 40 + 5 * c, 20 + d : 27 + d] = False  # an off-centre vertical stroke
            images[c, d, 70:75, 10:60] = False  # and a horizontal one: the rotations differ
    folder.mkdir()
    np.savez(folder / "omniglot_trainval.npz", images=images, names=np.array(names))
    (folder / "splits_vinyals").mkdir()
    rot = ("rot000", "rot090", "rot180", "rot270")
    parts = {"train": names[:3], "val": names[3:5]} | ({"test": names[5:]} if test else {})
    for split, chars in parts.items():
        text = "\n".join(f"{n}/{r}" for n in chars for r in rot)
        (folder / "splits_vinyals" / f"{split}.txt").write_text(text + "\n")
    return names


def test_omniglot_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAEDGE_CACHE", str(tmp_path / "cache"))
    write_fake_omniglot(tmp_path / "omni")
    fam = make_family("omniglot", path=tmp_path / "omni")
    assert fam.input_shape == (1, 28, 28) and fam.metric == "accuracy" and fam.normalize is False
    assert fam.class_counts("train") == {c: 3 for c in range(12)}
    assert fam.class_counts("val") == {c: 3 for c in range(12, 20)}
    assert fam.class_names[0] == "Alpha/character01/rot000" and fam.class_names[13] == "Alpha/character04/rot090"
    x, y = fam.arrays("train")
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert x.mean() < 0.3  # mostly background: ink = 1 after inversion
    grey = ((x > 0.05) & (x < 0.95)).mean()
    assert grey > 0.01  # antialiased resize, not a binary nearest-neighbour one
    base = x[y == 0][0, 0]
    for k in range(1, 4):  # classes 1..3 are the 90/180/270 degree turns of class 0
        np.testing.assert_array_equal(x[y == k][0, 0], np.rot90(base, k))
    with pytest.raises(ValueError, match="test characters are not in .* use split 'val'"):
        fam.sample_task(np.random.default_rng(0), 1, 1, "test")
    t = fam.sample_task(np.random.default_rng(0), 1, 2, "val", ways=8)
    assert t.x_query.shape == (16, 1, 28, 28) and set(t.info["classes"]) == set(range(12, 20))
    assert len(list((tmp_path / "cache").glob("omniglot-28px-*.npz"))) == 1
    again = make_family("omniglot", path=tmp_path / "omni")  # served from the cache
    np.testing.assert_array_equal(again.arrays("val")[0], fam.arrays("val")[0])


def test_omniglot_fake_with_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAEDGE_CACHE", str(tmp_path / "cache"))
    write_fake_omniglot(tmp_path / "omni", test=True)
    fam = make_family("omniglot", path=tmp_path / "omni" / "omniglot_trainval.npz", image_size=14)
    assert fam.input_shape == (1, 14, 14) and fam.classes("test") == [20, 21, 22, 23]
    (tmp_path / "omni" / "splits_vinyals" / "val.txt").write_text("Alpha/character09/rot000\n")
    with pytest.raises(ValueError, match=r"val\.txt, line 1: character 'Alpha/character09'"):
        make_family("omniglot", path=tmp_path / "omni")


# ---------------------------------------------------------------- the real shared data


@pytest.mark.data
def test_real_omniglot(real_family) -> None:
    # The first run preprocesses the 24 000 drawings (about 5 s); later runs read the cache.
    fam = real_family("omniglot", "omniglot")
    assert len(fam.classes("train")) == 4112 and len(fam.classes("val")) == 688
    assert set(fam.class_counts("train").values()) == set(fam.class_counts("val").values()) == {20}
    b = fam.sample_batch(np.random.default_rng(0), 32, 1, 15, "val", ways=20)
    assert b.x_support.shape == (32, 20, 1, 28, 28) and b.x_query.shape == (32, 300, 1, 28, 28)


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "classes", "shape", "split_by", "sizes"),
    [
        ("ucr-basicmotions", 4, (6, 100), "sample", (40, 40)),
        ("ucr-wiimote", 10, (1, 361), "class", (60, 40)),
        ("ucr-acsf1", 10, (1, 512), "class", (120, 80)),
        ("ucr-plaid", 11, (1, 512), "class", (517, 557)),
    ],
)
def test_real_ucr(
    name: str, classes: int, shape: tuple[int, int], split_by: str, sizes: tuple[int, int], real_family
) -> None:
    fam = real_family(name, "ucr_uea_sensor")
    assert fam.describe()["dataset"] == real_family("ucr", "ucr_uea_sensor", dataset=fam.dataset.lower()).dataset
    assert len(fam.class_names) == classes and fam.input_shape == shape and fam.split_by == split_by
    assert fam.ways == 4 and len(fam.classes("test")) == 4
    assert tuple(fam.describe()["splits"][s]["samples"] for s in ("train", "test")) == sizes
    t = fam.sample_task(np.random.default_rng(0), 1, 1, "test")
    assert t.x_support.shape == (4, *shape) and np.isfinite(t.x_support).all()


def test_glyphs_family_is_built_in_seeded_and_split_by_class():
    from metaedge.sdk.tasks import make_family

    small = {"train_classes": 20, "val_classes": 6, "test_classes": 6, "samples": 4}
    a, b = make_family("glyphs", **small), make_family("glyphs", **small)
    task = a.sample_task(np.random.default_rng(0), 2, 1, ways=5, split="test")
    again = b.sample_task(np.random.default_rng(0), 2, 1, ways=5, split="test")
    np.testing.assert_array_equal(task.x_support, again.x_support)
    assert task.x_support.shape == (10, 1, 28, 28) and 0 <= task.x_support.min() and task.x_support.max() <= 1
    assert task.x_support.mean() > 0.02  # ink was drawn
    train, test = (set(np.unique(a.arrays(s)[1]).tolist()) for s in ("train", "test"))
    assert train.isdisjoint(test)
    # drawings of one glyph are closer to each other than to other glyphs
    x, y = a.arrays("train")
    x = x.reshape(len(x), -1).astype(np.float32)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    same = y[:, None] == y[None]
    assert d[same & ~np.eye(len(y), dtype=bool)].mean() < d[~same].mean()
