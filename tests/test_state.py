"""Adapted states: format 2 is the C library's bytes (both directions), format 1 (.npz) still loads, and every
truncation and bit flip of a written state is refused or gives the right state, never a wrong one."""

from __future__ import annotations

import hashlib
import math
import os
import struct
import zlib

import numpy as np
import pytest

from metaedge.export.bundle import export_bundle
from metaedge.runtime import native
from metaedge.runtime.bundle import BundleError
from metaedge.runtime.model import Adapted, Model
from metaedge.runtime.state import HEADER_BYTES, BundleIdentity, StateFile, atomic_write_bytes, read_state, write_state
from metaedge.sdk.tasks import make_family
from metaedge.sdk.train import TrainConfig, train


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A small Meta-SGD sensor bundle with its model.mebin (every parameter adapted)."""
    root = tmp_path_factory.mktemp("state")
    run = train(TrainConfig(family="sensor-pressure", algo="metasgd", shots=3, queries=5, meta_batch=4,
                            iterations=10, hidden=[16, 16], activation="tanh", inner_steps=2), root / "run",
                progress=False)
    return export_bundle(run, root / "bundle", formats="all", check=False)


@pytest.fixture(scope="module")
def adapted(bundle):
    model = Model.load(bundle, backend="onnxruntime")
    task = make_family("sensor-pressure").sample_task(np.random.default_rng(4), 3, 20)
    return model.adapt(task.x_support, task.y_support, steps=3), task.x_query


def _identity(model: Model) -> BundleIdentity:
    return BundleIdentity.of(model.bundle.path, model.bundle.manifest.files["theta0.npy"])


def test_layout_is_the_documented_one(adapted, tmp_path):
    """Field by field against docs/firmware.md, the CRC-32 recomputed with zlib, the identity = sha256 of the
    manifest bytes."""
    state, _ = adapted
    path = tmp_path / "unit.state"
    state.save(path)
    data = path.read_bytes()
    n = state.theta.size
    assert n == model_n(state) and len(data) == HEADER_BYTES + 4 * n + 4 == 80 + 4 * n + 4
    assert data[:4] == b"MEST" and struct.unpack_from("<HHIII", data, 4) == (2, 80, len(data), _crc(state.model), n)
    assert struct.unpack_from("<II", data, 20) == (state.steps_run, state.steps_kept)
    assert struct.unpack_from("<ff", data, 28) == tuple(np.float32(state.losses))  # the support losses
    assert data[36:48] == bytes(12)
    assert data[48:80] == hashlib.sha256((state.model.bundle.path / "manifest.json").read_bytes()).digest()
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", n, 80), state.theta)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    back = read_state(path, _identity(state.model), n_theta=n)
    assert back.format_version == 2 and back.payload_sha256 == hashlib.sha256(state.theta.tobytes()).hexdigest()


def model_n(state: Adapted) -> int:
    """Adapted floats of the bundle: its theta0."""
    return state.model.theta0.size


def _crc(model: Model) -> int:
    return int.from_bytes((model.bundle.path / "model.mebin").read_bytes()[12:16], "little")


@pytest.mark.skipif(not native.available(), reason=f"{native.unavailable_reason()}")
def test_python_and_c_states_are_the_same_bytes(adapted, tmp_path):
    """A state moves between Linux and firmware: the C library reads the file Python wrote, Python loads what
    ``me_state_write`` wrote, and with a zero identity Python writes exactly the C bytes."""
    state, xq = adapted
    model = state.model
    c = native.NativeModel((model.bundle.path / "model.mebin").read_bytes())
    path = tmp_path / "linux.state"
    state.save(path)
    np.testing.assert_array_equal(c.theta_from_state(path.read_bytes()), state.theta)
    firmware = c.state_bytes(state.theta)
    assert firmware == StateFile(state.theta, model_crc=_crc(model)).to_bytes()
    (tmp_path / "firmware.state").write_bytes(firmware)
    loaded = Adapted.load(model, tmp_path / "firmware.state")
    np.testing.assert_array_equal(loaded.predict(xq), state.predict(xq))
    # the C side refuses another model's state with its own code
    other = bytearray(firmware)
    other[12] ^= 1
    other[-4:] = struct.pack("<I", zlib.crc32(bytes(other[:-4])))
    with pytest.raises(native.NativeError) as err:
        c.theta_from_state(bytes(other))
    assert err.value.status == "model"


def test_format_1_still_loads(adapted, tmp_path):
    """An ``.npz`` as the previous runtime wrote it loads; one of another bundle is refused."""
    state, xq = adapted
    model = state.model
    old = tmp_path / "old.npz"
    np.savez(old, theta=state.theta, steps_kept=np.int64(state.steps_kept),
             bundle_theta0_sha256=np.array(model.bundle.manifest.files["theta0.npy"]))
    loaded = Adapted.load(model, old)
    assert loaded.steps_kept == state.steps_kept
    np.testing.assert_array_equal(loaded.predict(xq), state.predict(xq))
    assert read_state(old, _identity(model)).format_version == 1
    np.savez(old, theta=state.theta, steps_kept=np.int64(1), bundle_theta0_sha256=np.array("0" * 64))
    with pytest.raises(BundleError, match=r"old\.npz was adapted from a different bundle; adapt again"):
        Adapted.load(model, old)
    np.savez(old, theta=np.array(["x"]), steps_kept=np.int64(1),
             bundle_theta0_sha256=np.array(model.bundle.manifest.files["theta0.npy"]))
    with pytest.raises(BundleError, match="not an adapted state written by metaedge"):
        Adapted.load(model, old)


def test_refusals_are_one_sentence(adapted, tmp_path):
    state, _ = adapted
    model, n = state.model, state.theta.size
    identity = _identity(model)
    good = StateFile(state.theta, identity.manifest_sha256, identity.model_crc, 3, 2).to_bytes()
    path = tmp_path / "s"

    def refused(data: bytes, pattern: str, **kw) -> None:
        path.write_bytes(data)
        with pytest.raises(BundleError, match=pattern) as err:
            read_state(path, identity, **{"n_theta": n, **kw})
        assert str(err.value).count(". ") == 0 and str(err.value).startswith(str(path))

    def fix(data: bytearray) -> bytes:
        data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
        return bytes(data)

    refused(b"not a state", "is not an adapted state written by metaedge; adapt again")
    refused(good[:50], r"is truncated \(50 bytes")
    refused(good[:-1], rf"is truncated \({len(good) - 1} of {len(good)} bytes\)")
    refused(good[:100] + bytes([good[100] ^ 4]) + good[101:], r"is corrupt \(CRC-32 mismatch\)")
    refused(fix(bytearray(good[:4] + b"\x03" + good[5:])), "is adapted-state format 3, this runtime reads formats 1 "
                                                           "and 2; update metaedge")
    other = bytearray(good)
    other[50] ^= 1  # another bundle's manifest digest
    refused(fix(other), "was adapted from a different bundle; adapt again with this bundle")
    firmware_other_model = StateFile(state.theta, model_crc=identity.model_crc ^ 1).to_bytes()
    refused(firmware_other_model, "was adapted from a different bundle")
    refused(good, rf"holds {n} values, this bundle's adapted state has {n + 1}", n_theta=n + 1)
    refused(good, "not a whole number of 7-wide prototypes", n_theta=None, prototype_dim=7)
    nan = bytearray(good)
    nan[HEADER_BYTES:HEADER_BYTES + 4] = struct.pack("<f", math.nan)
    refused(fix(nan), "holds NaN or infinite values")
    kept = bytearray(good)
    kept[24:28] = struct.pack("<I", 9)  # more steps kept than run
    refused(fix(kept), "inconsistent header fields")
    with pytest.raises(BundleError, match=r"missing\.state cannot be read"):
        read_state(tmp_path / "missing.state", identity)
    # a firmware state (zero identity) needs a bundle with a model.mebin to be tied to
    with pytest.raises(BundleError, match="different bundle"):
        path.write_bytes(StateFile(state.theta, model_crc=identity.model_crc).to_bytes())
        read_state(path, BundleIdentity(identity.manifest_sha256, 0, identity.theta0_sha256))
    assert read_state(path, identity, n_theta=n).bundle_identity == bytes(32)
    # bytes after the declared end are ignored, as me_state_read ignores them (a whole flash slot)
    path.write_bytes(good + b"\xff" * 64)
    back = read_state(path, identity, n_theta=n)
    assert (back.steps_run, back.steps_kept) == (3, 2)
    np.testing.assert_array_equal(back.theta, state.theta)


def test_every_truncation_and_bit_flip_is_refused_or_right(adapted, tmp_path, capsys):
    """The state on disk, cut at every byte offset and with each bit of each byte flipped in turn: every read is
    a BundleError or the state that was written, never another one."""
    state, _ = adapted
    model, n = state.model, state.theta.size
    identity = _identity(model)
    path = tmp_path / "unit.state"
    state.save(path)
    good = path.read_bytes()
    probe = tmp_path / "probe.state"
    tried = refused = wrong = 0

    def attempt(data: bytes) -> None:
        nonlocal tried, refused, wrong
        tried += 1
        probe.write_bytes(data)
        try:
            got = read_state(probe, identity, n_theta=n)
        except BundleError:
            refused += 1
            return
        if not np.array_equal(got.theta, state.theta) or got.steps_kept != state.steps_kept:
            wrong += 1

    for cut in range(len(good)):
        attempt(good[:cut])
    for at in range(len(good)):
        for bit in range(8):
            attempt(good[:at] + bytes([good[at] ^ (1 << bit)]) + good[at + 1:])
    with capsys.disabled():
        print(f"\nPython state corruption sweep: {len(good)}-byte state, {tried} reads ({len(good)} truncations, "
              f"{8 * len(good)} bit flips), {refused} refused, {wrong} wrong states returned")
    assert tried == 9 * len(good) and wrong == 0 and refused == tried


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "unit.state"
    write_state(path, StateFile(np.arange(3, dtype=np.float32)))
    before = path.read_bytes()

    def power_cut(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new bytes")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["unit.state"]
