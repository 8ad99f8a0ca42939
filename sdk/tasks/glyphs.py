"""``glyphs``: built-in synthetic handwritten-like characters for n-way k-shot classification.

Each class is a glyph of 2-4 pen strokes (quadratic Bezier curves); each sample of it is the glyph drawn
again by a different "hand": control points jittered, the whole glyph rotated, scaled and shifted a little,
rasterised at 28x28 with ink = 1 like the Vinyals Omniglot protocol. Classes of the splits are disjoint, so
meta-test episodes are characters never seen in meta-training. It needs no download, which makes it the
classification family for demos, tests and benchmarks of the export path (Conv4 or MLP models); it is much
easier than Omniglot and says nothing about accuracy on real data.
"""

from __future__ import annotations

import numpy as np

from .base import register_family
from .episodes import EpisodicFamily

SIZE = 28
_POINTS = 48  # samples along each stroke when rasterising


def _strokes(rng: np.random.Generator, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Control points ``(classes, 4, 3, 2)`` in pixels and the number of strokes per class ``(classes,)``."""
    control = rng.uniform(5, SIZE - 5, size=(classes, 4, 3, 2))
    return control, rng.integers(2, 5, size=classes)


def _render(control: np.ndarray, count: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One drawn sample per row: ``control`` ``(n, 4, 3, 2)``, ``count`` ``(n,)`` -> uint8 images ``(n, 28, 28)``."""
    n = len(control)
    control = control + rng.normal(0, 0.8, size=control.shape)  # the hand's wobble
    angle = rng.normal(0, 0.12, size=n)
    scale = rng.uniform(0.9, 1.1, size=n)
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], 1).reshape(n, 2, 2) * scale[:, None,
                                                                                                              None]
    centre = (SIZE - 1) / 2
    control = np.einsum("nij,nsjk->nsik", rot, (control - centre).transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    control = control + centre + rng.normal(0, 1.0, size=(n, 1, 1, 2))
    t = np.linspace(0, 1, _POINTS)[:, None]
    p0, p1, p2 = control[:, :, None, 0], control[:, :, None, 1], control[:, :, None, 2]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (n, 4, P, 2)
    drawn = np.arange(4)[None, :, None] < count[:, None, None]  # strokes beyond the class's count are not drawn
    ink = np.zeros((n, SIZE + 2, SIZE + 2))
    xy = np.clip(points, 0, SIZE - 1)
    sample = np.broadcast_to(np.arange(n)[:, None, None], drawn.shape[:2] + (_POINTS,))
    mask = np.broadcast_to(drawn, sample.shape)
    x0, y0 = np.floor(xy[..., 0]).astype(int), np.floor(xy[..., 1]).astype(int)
    fx, fy = xy[..., 0] - x0, xy[..., 1] - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(ink, (sample[mask], y0[mask] + dy + 1, x0[mask] + dx + 1), w[mask])
    # pen width: a 3x3 blur of the splatted points
    blurred = sum(np.roll(np.roll(ink, dy, 1), dx, 2) * (0.3 if dx or dy else 1.0)
                  for dx in (-1, 0, 1) for dy in (-1, 0, 1))[:, 1:-1, 1:-1]
    return (np.clip(blurred, 0, 1) * 255).round().astype(np.uint8)


def make_glyphs(classes: dict[str, int], samples: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (x uint8 (N, 1, 28, 28), y (N,))}`` with ``classes[split]`` new glyphs per split."""
    rng = np.random.default_rng(seed)
    out, first = {}, 0
    for split, k in classes.items():
        control, count = _strokes(rng, k)
        ids = np.repeat(np.arange(k), samples)
        x = _render(control[ids], count[ids], rng)[:, None]
        out[split] = (x, ids + first)
        first += k
    return out


class Glyphs(EpisodicFamily):
    """Synthetic stroke characters (see module docstring).

    Args:
        ways: default classes per episode.
        train_classes, val_classes, test_classes: new glyphs in each split.
        samples: drawings per glyph (Omniglot has 20).
        seed: the glyph set; the same seed gives the same images everywhere.
    """

    name = "glyphs"
    input_units = ("",)

    def __init__(self, ways: int = 5, train_classes: int = 300, val_classes: int = 60, test_classes: int = 60,
                 samples: int = 20, seed: int = 0) -> None:
        splits = make_glyphs({"train": train_classes, "val": val_classes, "test": test_classes}, samples, seed)
        super().__init__(splits, ways=ways, name=self.name, source=f"synthetic (seed {seed})")


register_family("glyphs", Glyphs)
