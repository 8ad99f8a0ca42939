"""The atomic-write helper (metaedge.atomic) that the device and the server sides share."""

from __future__ import annotations

import numpy as np
import pytest

from metaedge import atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "state.npz"
    target.write_bytes(b"old")
    atomic.atomic_write(target, lambda f: np.savez(f, theta=np.arange(3.0)))
    with np.load(target, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["theta"], [0.0, 1.0, 2.0])
    atomic.atomic_write_text(tmp_path / "a.json", "{}\n")
    assert (tmp_path / "a.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "state.npz"]
    # permissions as a plain write gives (the temp file itself was owner-only)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == atomic.FILE_MODE


def test_a_failing_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"last good state")

    def torn(f):
        f.write(b"half a st")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, torn)
    assert target.read_bytes() == b"last good state"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]
