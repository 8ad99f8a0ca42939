"""Per-feature standardisation of inputs and regression targets, stored with every run.

Sensor readings span decades (ADC counts in the thousands, loads in kilograms); learning rates that
suit one unit suit none of the others. The trainer fits one affine map per feature on meta-train
tasks and the learners only ever see standardised values; reports convert back to physical units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .tasks.base import TaskBatch, TaskFamily


@dataclass
class Normalizer:
    """``x_n = (x - x_mean) / x_std``, ``y_n = (y - y_mean) / y_std`` (identity when disabled)."""

    x_mean: list[float]
    x_std: list[float]
    y_mean: list[float]
    y_std: list[float]

    @classmethod
    def identity(cls, input_dim: int, output_dim: int) -> Normalizer:
        return cls([0.0] * input_dim, [1.0] * input_dim, [0.0] * output_dim, [1.0] * output_dim)

    @classmethod
    def fit(cls, family: TaskFamily, rng: np.random.Generator, n_tasks: int = 200, points: int = 20) -> Normalizer:
        """Statistics over ``n_tasks`` meta-train tasks; identity for unnormalised or classification families."""
        n_out = family.output_dim if family.task_kind == "regression" else 0
        if not family.normalize or family.task_kind != "regression" or len(family.input_shape) != 1:
            return cls.identity(family.input_dim, n_out)
        b = family.sample_batch(rng, n_tasks, points, points)
        x = np.concatenate([b.x_support, b.x_query], 1).reshape(-1, family.input_dim).astype(np.float64)
        y = np.concatenate([b.y_support, b.y_query], 1).reshape(-1, family.output_dim).astype(np.float64)
        guard = lambda s: np.where(s > 1e-12, s, 1.0)  # noqa: E731  constant features stay put
        return cls(x.mean(0).tolist(), guard(x.std(0)).tolist(), y.mean(0).tolist(), guard(y.std(0)).tolist())

    def to_dict(self) -> dict:
        return asdict(self)

    def x(self, x: np.ndarray) -> np.ndarray:
        """Standardise inputs ``(..., d_in)``."""
        return ((x - np.asarray(self.x_mean, np.float32)) / np.asarray(self.x_std, np.float32)).astype(np.float32)

    def y(self, y: np.ndarray) -> np.ndarray:
        """Standardise regression targets ``(..., d_out)``; labels pass through."""
        if not self.y_mean or not np.issubdtype(y.dtype, np.floating):
            return y
        return ((y - np.asarray(self.y_mean, np.float32)) / np.asarray(self.y_std, np.float32)).astype(np.float32)

    def y_inverse(self, y: np.ndarray) -> np.ndarray:
        """Standardised predictions ``(..., d_out)`` back to physical units."""
        if not self.y_mean:
            return y
        return y * np.asarray(self.y_std, np.float32) + np.asarray(self.y_mean, np.float32)

    @property
    def is_identity(self) -> bool:
        """Whether standardising changes nothing (unnormalised families, e.g. the sinusoid)."""
        return (all(m == 0.0 for m in self.x_mean + self.y_mean) and all(s == 1.0 for s in self.x_std + self.y_std))

    def samples(self, x: np.ndarray) -> np.ndarray:
        """Samples ``(N, *input_shape)`` standardised as :meth:`batch` does (only 1-D features are)."""
        return self.x(x) if x.ndim == 2 else x

    def batch(self, b: TaskBatch) -> TaskBatch:
        """A standardised copy of ``b`` (inputs of any shape: only 1-D features are standardised); ``b`` itself
        where that changes nothing (the identity on float32 arrays: the trainer calls this every iteration)."""
        arrays = (b.x_support, b.y_support, b.x_query, b.y_query)
        if self.is_identity and all(a.dtype == np.float32 or not np.issubdtype(a.dtype, np.floating) for a in arrays):
            return b
        tx = self.x if b.x_support.ndim == 3 else (lambda a: a)
        return TaskBatch(tx(b.x_support), self.y(b.y_support), tx(b.x_query), self.y(b.y_query), b.info)
