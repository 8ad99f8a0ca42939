"""The sinusoid regression benchmark of Finn et al. 2017 (MAML), Section 5.1.

Each task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5.0]``, phase ``phi ~ U[0, pi]``
and inputs ``x ~ U[-5, 5]``; no noise. The loss is MSE on the raw scale (no normalisation), as in
the paper, so its MSE figures compare directly.
"""

from __future__ import annotations

import numpy as np

from .base import Split, Task, TaskBatch, TaskFamily, register_family


@register_family("sinusoid")
class Sinusoid(TaskFamily):
    """``y = A sin(x - phi)``, the MAML paper's task distribution."""

    name = "sinusoid"
    input_names = ("x",)
    output_names = ("y",)
    normalize = False
    metric = "mse"

    def __init__(
        self,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, float(np.pi)),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range

    def sample_task(self, rng: np.random.Generator, shots: int, queries: int, split: Split = "train") -> Task:
        """Amplitude, phase, then the ``shots + queries`` inputs, uniform over their ranges (the first task of
        :meth:`sample_batch`)."""
        return self.sample_batch(rng, 1, shots, queries, split).task(0)

    def sample_batch(
        self, rng: np.random.Generator, n_tasks: int, shots: int, queries: int, split: Split = "train"
    ) -> TaskBatch:
        """``n_tasks`` tasks in one draw (the trainer samples a meta-batch per iteration, and 25 small draws cost as
        much as the meta-gradient): per task, ``2 + shots + queries`` uniforms of the stream as ``lo + (hi - lo) *
        random()``, which is ``rng.uniform(lo, hi)``'s arithmetic, so the tasks are those of one ``uniform`` draw
        after the other, bit for bit (the draws runs made before this method existed)."""
        n = shots + queries
        u = rng.random((n_tasks, 2 + n))
        amp = self.amplitude[0] + (self.amplitude[1] - self.amplitude[0]) * u[:, 0]
        phase = self.phase[0] + (self.phase[1] - self.phase[0]) * u[:, 1]
        x = (self.x_range[0] + (self.x_range[1] - self.x_range[0]) * u[:, 2:])[..., None]
        y = (amp[:, None, None] * np.sin(x - phase[:, None, None])).astype(np.float32)
        x = x.astype(np.float32)
        info = [{"amplitude": float(a), "phase": float(p)} for a, p in zip(amp, phase)]
        parts = (x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
        return TaskBatch(*(np.ascontiguousarray(a) for a in parts), info)

    def curve(self, info: dict, x: np.ndarray) -> np.ndarray:
        """The noiseless task function at ``x`` of shape ``(n, 1)``; used for plots."""
        return (info["amplitude"] * np.sin(x - info["phase"])).astype(np.float32)
