"""Sensor time-series classification from the UCR/UEA archive (``.ts`` files), as few-shot episodes.

A small reader for the UEA/UCR ``.ts`` text format (no aeon/sktime needed): ``#`` comments, ``@`` header
lines (``@problemName``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@classLabel true A B ...``,
``@data``), then one case per line, its dimensions separated by ``:``, values by ``,``, and the class
label last. ``?`` or ``NaN`` mark missing values, which also pad variable-length series.

Every series is resampled to one length by linear interpolation over its non-missing part, then
(by default) z-normalised per channel, as is standard for UCR; a sample is ``(channels, length)``.

Split policy (``split_by="auto"``):

- at least 8 classes: split by **class**. The TRAIN and TEST files are pooled and about 60 % of the
  classes (``1 - test_class_fraction``, shuffled by ``seed``) form ``"train"``, the rest ``"test"``,
  so test episodes hold unseen classes: true few-shot learning;
- fewer classes (BasicMotions, 4): split by **sample**: ``"train"`` = the TRAIN file, ``"test"`` = the
  TEST file, i.e. personalisation to new recordings of known activities.

There is no ``"val"`` split. The default ``ways`` is ``min(5, classes in "test")``: 4 for the sets below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...errors import InputError
from .base import register_family
from .episodes import EpisodicFamily
from .table import UnitSplit, find_data_dir

UCR_FOLDER = "ucr_uea_sensor"
#: sets with at least this many classes are split by class, smaller ones by sample
CLASS_SPLIT_MIN_CLASSES = 8


@dataclass
class TsFile:
    """The cases of one ``.ts`` file.

    Attributes:
        path: the file.
        series: one float64 array ``(channels, length_i)`` per case; NaN marks missing values.
        labels: ``(n,)`` class label strings.
        class_labels: the labels the ``@classLabel`` header lists (empty when it lists none).
        lines: ``(n,)`` the file line number of each case, for error messages.
        header: the ``@`` header values by lower-case key (``"problemname"``, ``"serieslength"``...).
    """

    path: Path
    series: list[np.ndarray]
    labels: list[str]
    class_labels: tuple[str, ...]
    lines: list[int]
    header: dict[str, str] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.series[0].shape[0])

    @property
    def max_length(self) -> int:
        return max(int(s.shape[1]) for s in self.series)


def read_ts(path: str | Path) -> TsFile:
    """Parse a UEA/UCR ``.ts`` classification file.

    Raises:
        ValueError: a malformed header or data line (the message names the file and line number),
            time stamps or a regression (``@targetLabel``) file, or a file without cases.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass an existing .ts file")
    header: dict[str, str] = {}
    class_labels: tuple[str, ...] = ()
    series: list[np.ndarray] = []
    labels: list[str] = []
    lines: list[int] = []
    channels: int | None = None
    in_data = False
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}, line {number}"
            if line.startswith("@"):
                if in_data:
                    raise InputError(f"{where}: header line {line[:40]!r} after @data; move it above @data")
                key, _, value = line[1:].partition(" ")
                key, value = key.lower(), value.strip()
                if key == "data":
                    in_data = True
                elif key == "classlabel":
                    flag, *names = value.split()
                    if flag.lower() != "true":
                        raise InputError(
                            f"{where}: @classLabel {flag}: not a classification file; pass a .ts file "
                            "with @classLabel true"
                        )
                    class_labels = tuple(names)
                elif key == "targetlabel" and value.lower().startswith("true"):
                    raise InputError(f"{where}: a regression (@targetLabel) file; pass a classification .ts file")
                elif key == "dimensions" and not value.isdigit():
                    raise InputError(f"{where}: @dimensions {value!r} is not a positive integer; fix the header")
                elif key == "timestamps" and value.lower() == "true":
                    raise InputError(
                        f"{where}: time-stamped series are not supported; export the file without time stamps"
                    )
                header[key] = value
                continue
            if not in_data:
                raise InputError(f"{where}: data before the @data line; add the header or fix that line")
            fields = line.split(":")
            if len(fields) < 2:
                raise InputError(
                    f"{where}: expected 'values:...:label' but found no ':' before a class label; fix that line"
                )
            label = fields[-1].strip()
            if class_labels and label not in class_labels:
                raise InputError(
                    f"{where}: class label {label!r} is not in the @classLabel list {list(class_labels)}; "
                    "fix the label or the header"
                )
            if channels is None:
                channels = len(fields) - 1
            elif len(fields) - 1 != channels:
                raise InputError(
                    f"{where}: {len(fields) - 1} dimensions where earlier cases have {channels}; fix that line"
                )
            dims = [_parse_values(dim, where, d) for d, dim in enumerate(fields[:-1])]
            width = max(len(v) for v in dims)
            # Dimensions of one case may differ in length: pad the short ones with NaN (= missing).
            case = np.full((len(dims), width), np.nan)
            for d, values in enumerate(dims):
                case[d, : len(values)] = values
            series.append(case)
            labels.append(label)
            lines.append(number)
    if not series:
        raise InputError(f"{path}: no cases after the @data line; pass a filled .ts file")
    expected = _expected_channels(header)
    if expected is not None and expected != channels:
        raise InputError(
            f"{path}: the header declares {expected} dimensions but the cases have {channels}; "
            "fix the header or the data"
        )
    return TsFile(path, series, labels, class_labels, lines, header)


def _parse_values(text: str, where: str, dim: int) -> np.ndarray:
    tokens = [t.strip() for t in text.split(",")]
    try:
        return np.array(["nan" if t == "?" else t for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if t != "?" and not _is_float(t))
        raise InputError(f"{where}: dimension {dim} holds {bad!r}, not a number or '?'; fix that line") from None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _expected_channels(header: dict[str, str]) -> int | None:
    if "dimensions" in header:
        return int(header["dimensions"])
    if header.get("univariate", "").lower() == "true":
        return 1
    return None


def to_fixed_length(ts: TsFile, length: int, znorm: bool = True) -> np.ndarray:
    """All cases of ``ts`` as ``(n, channels, length)`` float32.

    Each channel is linearly interpolated over its non-missing values, from the first to the last of
    them, onto ``length`` evenly spaced points (this drops NaN padding and fills inner gaps); with
    ``znorm`` each channel of each series is then shifted to mean 0 and scaled to standard deviation 1.
    """
    out = np.empty((len(ts.series), ts.channels, length), dtype=np.float64)
    for i, case in enumerate(ts.series):
        for c, values in enumerate(case):
            t = np.flatnonzero(np.isfinite(values))
            if len(t) == 0:
                raise InputError(f"{ts.path}, line {ts.lines[i]}: dimension {c} holds no value; drop that case")
            out[i, c] = np.interp(np.linspace(t[0], t[-1], length), t, values[t])
    if znorm:
        mean = out.mean(axis=2, keepdims=True)
        std = out.std(axis=2, keepdims=True)
        out = (out - mean) / np.where(std > 1e-8, std, 1.0)  # a constant channel becomes all zeros
    return out.astype(np.float32)


def ts_pair(name: str | None = None, path: str | Path | None = None) -> tuple[Path, Path]:
    """The ``<name>_TRAIN.ts`` and ``<name>_TEST.ts`` files of a UCR/UEA set.

    ``path`` may be either file of the pair or their folder; without ``path``, ``name`` is looked up
    (case-insensitively) in ``shared/data/ucr_uea_sensor`` (see :func:`find_data_dir`).
    """
    if path is None:
        if name is None:
            raise InputError("pass dataset= (e.g. 'BasicMotions') or path= (a folder or its _TRAIN.ts file)")
        root = find_data_dir(UCR_FOLDER)
        sets = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
        if name.lower() not in sets:
            raise InputError(
                f"no set {name!r} in {root}; use one of {sorted(p.name for p in sets.values())} or pass path="
            )
        path = sets[name.lower()]
    path = Path(path)
    if path.is_dir():
        wanted = None if name is None else f"{name}_TRAIN.ts".lower()
        trains = sorted(p for p in path.glob("*_TRAIN.ts") if wanted in (None, p.name.lower()))
        if len(trains) != 1:
            raise InputError(f"{path}: found {len(trains)} matching *_TRAIN.ts files; pass dataset= or one file's path")
        path = trains[0]
    stem = path.name
    for mine, other in (("_TRAIN.ts", "_TEST.ts"), ("_TEST.ts", "_TRAIN.ts")):
        if stem.endswith(mine):
            pair = path.with_name(stem[: -len(mine)] + other)
            if not pair.is_file():
                raise InputError(f"{path}: its partner file {pair.name} is missing; put both files in one folder")
            return (path, pair) if mine == "_TRAIN.ts" else (pair, path)
    raise InputError(f"{path}: expected a <name>_TRAIN.ts or <name>_TEST.ts file (or their folder)")


@register_family("ucr")
class UCRFamily(EpisodicFamily):
    """Few-shot episodes over a UCR/UEA classification set (see the module docstring for the split policy).

    Args:
        dataset: set name, looked up case-insensitively in ``shared/data/ucr_uea_sensor`` (e.g.
            ``"BasicMotions"``); ``make_family("ucr", dataset=...)``.
        path: a folder holding ``<dataset>_TRAIN.ts`` and ``<dataset>_TEST.ts``, or one of those files.
        ways: classes per episode; default ``min(5, classes in "test")``.
        length: samples per series after resampling; default the longest series, capped at ``max_length``.
        max_length: cap of the default ``length``.
        znorm: z-normalise each channel of each series.
        split_by: ``"auto"`` (class split from 8 classes on), ``"class"`` or ``"sample"``.
        test_class_fraction: share of the classes held out as ``"test"`` in a class split.
        seed: seed of the class shuffle of a class split.
        name: alias of ``dataset`` for direct construction, ``UCRFamily(name="ACSF1")`` (through
            :func:`make_family`, whose own first parameter is ``name``, pass ``dataset=``).
    """

    name = "ucr"
    #: the archive's set name (subclasses fix it)
    dataset: str | None = None

    def __init__(
        self,
        dataset: str | None = None,
        path: str | Path | None = None,
        ways: int | None = None,
        length: int | None = None,
        max_length: int = 512,
        znorm: bool = True,
        split_by: Literal["auto", "class", "sample"] = "auto",
        test_class_fraction: float = 0.4,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if dataset is not None and name is not None and dataset != name:
            raise InputError(f"dataset={dataset!r} and name={name!r} differ; pass only one of them")
        train_file, test_file = ts_pair(dataset or name or self.dataset, path)
        files = [read_ts(train_file), read_ts(test_file)]
        if files[0].channels != files[1].channels:
            raise InputError(
                f"{train_file} has {files[0].channels} dimensions but {test_file} has "
                f"{files[1].channels}; pass a matching pair"
            )
        class_labels = files[0].class_labels or tuple(sorted({lab for ts in files for lab in ts.labels}))
        index = {label: i for i, label in enumerate(class_labels)}
        for ts in files:
            unknown = next((lab for lab in ts.labels if lab not in index), None)
            if unknown is not None:
                raise InputError(
                    f"{ts.path}: class {unknown!r} is not among {train_file.name}'s classes "
                    f"{list(class_labels)}; pass a matching pair"
                )
        if length is None:
            length = min(max(ts.max_length for ts in files), max_length)
        x = [to_fixed_length(ts, length, znorm) for ts in files]
        y = [np.array([index[lab] for lab in ts.labels], dtype=np.int64) for ts in files]
        n_classes = len(class_labels)
        if split_by == "auto":
            split_by = "class" if n_classes >= CLASS_SPLIT_MIN_CLASSES else "sample"
        if split_by == "sample":
            splits = {"train": (x[0], y[0]), "test": (x[1], y[1])}
        elif split_by == "class":
            x_all, y_all = np.concatenate(x), np.concatenate(y)
            held = UnitSplit(test_fraction=test_class_fraction, split_seed=seed).assign(list(range(n_classes)))
            member = {s: np.isin(y_all, held[s]) for s in ("train", "test")}
            splits = {s: (x_all[m], y_all[m]) for s, m in member.items()}
        else:
            raise InputError(f"split_by={split_by!r}; use 'auto', 'class' or 'sample'")
        test_classes = len(np.unique(splits["test"][1]))
        self.dataset = files[0].header.get("problemname", train_file.name[: -len("_TRAIN.ts")])
        self.split_by, self.length, self.znorm = split_by, length, znorm
        self.seed, self.test_class_fraction = seed, test_class_fraction
        ways = min(5, test_classes) if ways is None else ways
        self._setup(splits, ways, None, class_labels, str(train_file.parent))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "dataset": self.dataset,
            "split_by": self.split_by,
            "seed": self.seed,
            "test_class_fraction": self.test_class_fraction,
            "length": self.length,
            "znorm": self.znorm,
            "classes": {s: self.classes(s) for s in self.splits},
        }


@register_family("ucr-basicmotions")
class BasicMotions(UCRFamily):
    """Smartwatch accelerometer + gyroscope (6 channels x 100), 4 activities, 40 + 40 cases: split by sample."""

    name = "ucr-basicmotions"
    dataset = "BasicMotions"


@register_family("ucr-wiimote")
class PickupGestureWiimoteZ(UCRFamily):
    """Wiimote z-acceleration of a pick-up gesture (1 channel, 29..361 samples), 10 users as classes, 100 cases."""

    name = "ucr-wiimote"
    dataset = "PickupGestureWiimoteZ"


@register_family("ucr-acsf1")
class ACSF1(UCRFamily):
    """Smart-plug power consumption (1 channel x 1460), 10 appliance types, 200 cases."""

    name = "ucr-acsf1"
    dataset = "ACSF1"


@register_family("ucr-plaid")
class PLAID(UCRFamily):
    """Plug-load current signatures (1 channel, 100..1344 samples), 11 appliance types, 1074 cases."""

    name = "ucr-plaid"
    dataset = "PLAID"
