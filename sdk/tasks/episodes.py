"""N-way k-shot classification episodes over any labelled arrays.

:class:`EpisodicFamily` holds one ``(x, y)`` array pair per split and draws the classic few-shot
episode: ``ways`` distinct classes of the split, then ``shots`` support and ``queries`` query
samples *per class*, without replacement, with the chosen classes relabelled ``0..ways-1`` in a
random order. The concrete families (Omniglot, UCR/UEA time series, image folders) only load and
split their data into such per-split arrays; sampling exists once, here.

Inputs may be float (kept as float32) or uint8 (images in ``0..255``, scaled to float32 ``[0, 1]``
when an episode is drawn), so large image sets cost a quarter of the memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError
from .base import Split, Task, TaskBatch, TaskFamily

#: above this many random keys per batch, :func:`sample_without_replacement` loops instead of sorting
_MAX_KEYS = 1 << 20


def sample_without_replacement(rng: np.random.Generator, counts: np.ndarray, need: int) -> np.ndarray:
    """``need`` distinct indices in ``0..counts[i]-1`` for each row ``i``: ``(len(counts), need)`` int64.

    Every ``counts[i]`` must be at least ``need``. Small pools are sampled at once by sorting random
    keys (padding positions get key 2, so they sort last); huge ones fall back to one draw per row.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == 0:
        return np.zeros((0, need), dtype=np.int64)
    width = int(counts.max())
    if counts.size * width <= _MAX_KEYS:
        keys = rng.random((counts.size, width))
        keys[np.arange(width) >= counts[:, None]] = 2.0
        return np.argsort(keys, axis=1)[:, :need].astype(np.int64)
    return np.stack([rng.choice(int(c), need, replace=False) for c in counts]).astype(np.int64)


@dataclass(frozen=True)
class EpisodeRows:
    """Episodes as row indices into a split's class-sorted inputs (``family.arrays(split)[0]``).

    Attributes:
        split: the split the rows index.
        support: ``(T, ways*shots)`` int64 rows, class-major (label 0's ``shots`` rows, then label 1's...).
        query: ``(T, ways*queries)`` int64 rows, likewise.
        classes: ``(T, ways)`` class id of label ``0..ways-1`` of each episode.
        shots, queries: samples per class in the support and query sets.
    """

    split: str
    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray
    shots: int
    queries: int

    def __len__(self) -> int:
        return int(self.support.shape[0])

    @property
    def ways(self) -> int:
        return int(self.classes.shape[1])

    def _labels(self, per_class: int) -> np.ndarray:
        return np.tile(np.repeat(np.arange(self.ways, dtype=np.int64), per_class), (len(self), 1))

    @property
    def y_support(self) -> np.ndarray:
        """Support labels ``(T, ways*shots)`` int64."""
        return self._labels(self.shots)

    @property
    def y_query(self) -> np.ndarray:
        """Query labels ``(T, ways*queries)`` int64."""
        return self._labels(self.queries)


class EpisodicFamily(TaskFamily):
    """N-way k-shot episodes over per-split labelled arrays.

    Args:
        splits: ``{split: (x, y)}`` with ``x`` of shape ``(N, *input_shape)`` (float, or uint8 images in
            ``0..255``) and ``y`` of shape ``(N,)`` integer class ids. Class ids are global: a class
            may appear in several splits (split by sample) or in one only (split by class).
        ways: default number of classes per episode (``output_dim``); :meth:`sample_task` and
            :meth:`sample_batch` take a ``ways=`` override, e.g. 20-way episodes from a 5-way family.
        name: registry-style name shown in :meth:`describe` (default: the class's ``name``).
        class_names: readable name per class id (a sequence indexed by id, or a mapping), for reports.
        source: where the data came from, for :meth:`describe`.

    Episodes: support ``(ways * shots, *input_shape)`` ordered class-major (label 0's ``shots``
    samples, then label 1's...), query ``(ways * queries, *input_shape)`` likewise; labels int64.
    Note that ``queries`` counts query samples **per class**, unlike the regression families.
    """

    name = "episodic"
    task_kind = "classification"
    input_names = ("x",)
    output_names = ("class",)
    normalize = False
    metric = "accuracy"

    def __init__(
        self,
        splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
        ways: int = 5,
        name: str | None = None,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        source: str = "arrays",
    ) -> None:
        self._setup(splits, ways, name, class_names, source)

    @classmethod
    def from_arrays(
        cls,
        splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
        ways: int = 5,
        name: str | None = None,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        source: str = "arrays",
    ) -> EpisodicFamily:
        """A family over already-loaded arrays, bypassing a subclass's loader (same arguments as the class)."""
        family = cls.__new__(cls)
        family._setup(splits, ways, name, class_names, source)
        return family

    def _setup(
        self,
        splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
        ways: int,
        name: str | None,
        class_names: Sequence[str] | Mapping[int, str] | None,
        source: str,
    ) -> None:
        """Validate and sort every split by class; every loader ends here."""
        if not splits:
            raise InputError(f"{source}: no split was given; pass at least {{'train': (x, y)}}")
        if name is not None:
            self.name = name
        self.source = source
        self._x: dict[str, np.ndarray] = {}
        self._classes: dict[str, np.ndarray] = {}  # (C,) sorted class ids
        self._start: dict[str, np.ndarray] = {}  # (C,) first row of each class in the sorted x
        self._count: dict[str, np.ndarray] = {}  # (C,) rows per class
        shape: tuple[int, ...] | None = None
        for split, (x, y) in splits.items():
            x, y = np.asarray(x), np.asarray(y)
            if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
                raise InputError(
                    f"{source}: split {split!r} needs x (N, *input_shape) and y (N,), got {x.shape} and {y.shape}; "
                    "pass one label per sample"
                )
            if not np.issubdtype(y.dtype, np.integer):
                raise InputError(f"{source}: split {split!r} has {y.dtype} labels; pass integer class ids")
            if x.dtype != np.uint8:
                x = x.astype(np.float32, copy=False)
                if not np.isfinite(x).all():
                    raise InputError(f"{source}: split {split!r} holds NaN or infinite inputs; fill or drop them")
            if shape is not None and x.shape[1:] != shape:
                raise InputError(
                    f"{source}: split {split!r} has inputs of shape {x.shape[1:]} but another split {shape}; "
                    "give every split the same input shape"
                )
            shape = x.shape[1:]
            y = y.astype(np.int64)
            if len(y) > 1 and (np.diff(y) < 0).any():
                order = np.argsort(y, kind="stable")
                x, y = x[order], y[order]
            classes, start, count = np.unique(y, return_index=True, return_counts=True)
            self._x[split], self._classes[split] = x, classes
            self._start[split], self._count[split] = start, count
        assert shape is not None
        self.input_shape = tuple(int(s) for s in shape)
        self.ways = self._check_ways(ways)
        self.output_dim = self.ways
        if class_names is None:
            self.class_names: dict[int, str] = {}
        elif isinstance(class_names, Mapping):
            self.class_names = {int(k): str(v) for k, v in class_names.items()}
        else:
            self.class_names = {i: str(v) for i, v in enumerate(class_names)}

    @staticmethod
    def _check_ways(ways: int) -> int:
        if int(ways) != ways or ways < 2:
            raise InputError(f"ways={ways} must be an integer >= 2 (classes per episode)")
        return int(ways)

    @property
    def splits(self) -> list[str]:
        """Names of the splits this family holds."""
        return list(self._x)

    def _split(self, split: str) -> str:
        """``split`` if held, else a ValueError; subclasses explain splits they lack on purpose."""
        if split not in self._x:
            raise InputError(f"{self.name} has no split {split!r}; use one of {self.splits}")
        return split

    def classes(self, split: Split | str) -> list[int]:
        """Sorted class ids present in ``split``."""
        return self._classes[self._split(split)].tolist()

    def class_counts(self, split: Split | str) -> dict[int, int]:
        """``{class id: number of samples}`` of ``split``."""
        s = self._split(split)
        return dict(zip(self._classes[s].tolist(), self._count[s].tolist()))

    def arrays(self, split: Split | str) -> tuple[np.ndarray, np.ndarray]:
        """All of ``split``: x ``(N, *input_shape)`` float32 and y ``(N,)`` int64 class ids, sorted by class."""
        s = self._split(split)
        return _as_float(self._x[s]), np.repeat(self._classes[s], self._count[s])

    def sample_task(
        self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train", ways: int | None = None
    ) -> Task:
        """One episode: ``ways`` classes x (``shots`` support + ``queries`` query samples per class).

        Returns a :class:`Task` with ``x_support (ways*shots, *input_shape)``, ``y_support (ways*shots,)``,
        ``x_query (ways*queries, *input_shape)`` and ``y_query (ways*queries,)``; the same draw as the
        first task of ``sample_batch(rng, 1, ...)``.
        """
        return self.sample_batch(rng, 1, shots, queries, split, ways=ways).task(0)

    def sample_batch(
        self,
        rng: np.random.Generator,
        n_tasks: int,
        shots: int,
        queries: int,
        split: Split = "train",
        ways: int | None = None,
    ) -> TaskBatch:
        """``n_tasks`` independent episodes, drawn at once: arrays ``(n_tasks, ways*shots|ways*queries, ...)``.

        Classes are drawn uniformly among the classes of ``split`` that hold at least ``shots + queries``
        samples; a seed fixes the batch. ``queries`` is per class. The same draw as
        ``batch_of(sample_rows(rng, ...))``.
        """
        return self.batch_of(self.sample_rows(rng, n_tasks, shots, queries, split, ways=ways))

    def sample_rows(
        self,
        rng: np.random.Generator,
        n_tasks: int,
        shots: int,
        queries: int,
        split: Split = "train",
        ways: int | None = None,
    ) -> EpisodeRows:
        """Which rows of :meth:`arrays` ``(split)`` make ``n_tasks`` episodes, without gathering any input.

        Consumes ``rng`` exactly as :meth:`sample_batch` does (which is this plus :meth:`batch_of`), so an
        evaluator that embeds a split once can draw the very same episodes from the embeddings.
        """
        s = self._split(split)
        w = self.ways if ways is None else self._check_ways(ways)
        if shots < 0 or queries < 0 or shots + queries == 0:
            raise InputError(f"shots={shots} and queries={queries} must be non-negative and not both 0")
        if n_tasks < 1:
            raise InputError(f"n_tasks={n_tasks} must be at least 1")
        need = shots + queries
        eligible = np.flatnonzero(self._count[s] >= need)
        if len(eligible) < w:
            raise InputError(
                f"{self.name}: split {s!r} has {len(eligible)} of {len(self._count[s])} classes with at least "
                f"{need} samples (shots + queries per class) but {w}-way episodes need {w}; ask for fewer "
                "ways, shots or queries"
            )
        # Generator.choice returns the picked classes in random order: that order is the label order.
        pos = eligible[np.stack([rng.choice(len(eligible), w, replace=False) for _ in range(n_tasks)])]  # (T, w)
        picks = sample_without_replacement(rng, self._count[s][pos].ravel(), need).reshape(n_tasks, w, need)
        rows = self._start[s][pos][:, :, None] + picks  # (T, w, need) rows of the class-sorted x
        return EpisodeRows(split=s, support=rows[:, :, :shots].reshape(n_tasks, w * shots),
                           query=rows[:, :, shots:].reshape(n_tasks, w * queries),
                           classes=self._classes[s][pos], shots=shots, queries=queries)

    def batch_of(self, rows: EpisodeRows) -> TaskBatch:
        """The episodes ``rows`` (from :meth:`sample_rows`) with their inputs gathered: a :class:`TaskBatch`."""
        x = self._x[self._split(rows.split)]
        info = [self._info(rows.split, ids) for ids in rows.classes.tolist()]
        return TaskBatch(_as_float(x[rows.support]), rows.y_support, _as_float(x[rows.query]), rows.y_query, info)

    def _info(self, split: str, ids: list[int]) -> dict[str, Any]:
        info: dict[str, Any] = {"split": split, "ways": len(ids), "classes": ids}
        if self.class_names:
            info["class_names"] = [self.class_names.get(i, str(i)) for i in ids]
        return info

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": self.source,
            "ways": self.ways,
            "splits": {
                s: {"classes": len(self._classes[s]), "samples": int(self._count[s].sum())} for s in self.splits
            },
        }


def _as_float(x: np.ndarray) -> np.ndarray:
    """uint8 images ``0..255`` -> float32 ``[0, 1]``; float32 passes through."""
    if x.dtype == np.uint8:
        return np.multiply(x, np.float32(1 / 255), dtype=np.float32)
    return x
