"""The sinusoid regression benchmark of Finn et al. 2017 (MAML), Section 5.1.

Each task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5.0]``, phase ``phi ~ U[0, pi]``
and inputs ``x ~ U[-5, 5]``; no noise. The loss is MSE on the raw scale (no normalisation), as in
the paper, so its MSE figures compare directly.
"""

from __future__ import annotations

import numpy as np

from .base import Split, Task, TaskFamily, register_family


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
        amp = rng.uniform(*self.amplitude)
        phase = rng.uniform(*self.phase)
        x = rng.uniform(*self.x_range, size=(shots + queries, 1))
        y = amp * np.sin(x - phase)
        x, y = x.astype(np.float32), y.astype(np.float32)
        return Task(x[:shots], y[:shots], x[shots:], y[shots:], {"amplitude": amp, "phase": phase})

    def curve(self, info: dict, x: np.ndarray) -> np.ndarray:
        """The noiseless task function at ``x`` of shape ``(n, 1)``; used for plots."""
        return (info["amplitude"] * np.sin(x - info["phase"])).astype(np.float32)
