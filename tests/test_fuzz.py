"""Property-based fuzzing of the readers of untrusted files (short runs; ``scripts/fuzz_runtime.py`` runs long).

Property: every mutated bundle (zip or directory), manifest, adapted state or CSV file either works or raises the
project's own error type; any other exception fails the test (hypothesis then shrinks it to a small example)."""

from __future__ import annotations

import pytest
from fuzzing import TARGETS, make_seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: examples per target in the default suite (well under 20 s in all)
EXAMPLES = {"bundle-zip": 100, "bundle-directory": 60, "adapted-state": 100, "csv": 150}


@pytest.fixture(scope="module")
def seeds(small_bundle, tmp_path_factory):
    return make_seeds(small_bundle, tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.mark.parametrize("name", list(TARGETS))
def test_readers_work_or_raise_the_projects_errors(seeds, name):
    strategy, target = TARGETS[name]

    @settings(max_examples=EXAMPLES[name], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data):
        target(seeds, data.draw(strategy(seeds)))

    run()
