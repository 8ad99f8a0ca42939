"""Shared fixtures: small, seeded task batches and models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaedge.sdk.tasks import find_data_dir, make_family


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small batched ops: one torch thread is fastest, and several contend badly on a loaded 2-core machine (use
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sinusoid_batch():
    """Eight sinusoid tasks (5 support, 7 query) as float32 tensors ``(T, n, 1)``."""
    b = make_family("sinusoid").sample_batch(np.random.default_rng(3), 8, 5, 7)
    return tuple(torch.from_numpy(a) for a in (b.x_support, b.y_support, b.x_query, b.y_query))


@pytest.fixture
def real_family():
    """``real_family(name, folder, **options)``: a family over ``../shared/data/<folder>``, or a skip with the
    reason when that data is absent (a user's fresh checkout has no ``../shared``)."""

    def make(name: str, folder: str, **options):
        try:
            find_data_dir(folder)
        except FileNotFoundError as err:
            pytest.skip(f"real data not available ({err})")
        return make_family(name, **options)

    return make


@pytest.fixture(scope="session")
def sinusoid_bundle(tmp_path_factory):
    """A small sinusoid MAML bundle with the ONNX graphs and the C library's model, trained and exported once per
    test session (the device-profile and TensorRT tests share it)."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    work = tmp_path_factory.mktemp("sinusoid-bundle")
    run = train(TrainConfig(family="sinusoid", algo="maml", shots=10, queries=10, meta_batch=4, iterations=5,
                            inner_steps=2), work / "run", progress=False)
    return export_bundle(run, work / "bundle", formats="all", check=False)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory):
    """A real bundle directory (sensor-pressure Meta-SGD MLP, 20 meta-iterations, ONNX graphs and model.mebin),
    parity-checked, trained and exported once per session: for the runtime tests and those of reading, signing and
    fuzzing bundles. Its run directory is ``run`` beside it. Do not modify it; copy it first."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    root = tmp_path_factory.mktemp("small-bundle")
    run = train(TrainConfig(family="sensor-pressure", algo="metasgd", shots=3, queries=5, meta_batch=4,
                            iterations=20, hidden=[16, 16], activation="tanh", inner_steps=2), root / "run",
                progress=False)
    return export_bundle(run, root / "model.meb")


@pytest.fixture(scope="session")
def ridge_bundle(tmp_path_factory):
    """A sensor-pressure ridge bundle (tanh MLP features + skip path, 150 meta-iterations) with ONNX graphs, the
    C library's model and fitted predictive intervals, trained and exported once per session (the interval and
    calibration tests share it)."""
    from metaedge.export.bundle import export_bundle
    from metaedge.sdk.config import TrainConfig
    from metaedge.sdk.train import train

    root = tmp_path_factory.mktemp("ridge-intervals")
    run = train(TrainConfig(family="sensor-pressure", algo="ridge", shots=3, queries=10, meta_batch=8,
                            iterations=150, hidden=[16, 16], activation="tanh", skip=True, inner_steps=1),
                root / "run", progress=False)
    return export_bundle(run, root / "ridge.meb", check=False)
