"""Shared fixtures: small, seeded task batches and models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaedge.sdk.tasks import make_family


@pytest.fixture
def sinusoid_batch():
    """Eight sinusoid tasks (5 support, 7 query) as float32 tensors ``(T, n, 1)``."""
    b = make_family("sinusoid").sample_batch(np.random.default_rng(3), 8, 5, 7)
    return tuple(torch.from_numpy(a) for a in (b.x_support, b.y_support, b.x_query, b.y_query))
