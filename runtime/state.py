"""Adapted states on disk (numpy + stdlib only).

Format 2 is the C library's own layout (``me_state_write`` / ``me_state_read``, docs/firmware.md), so a state moves
between firmware and Linux unchanged: an 80-byte little-endian header, the adapted float32 vector, then a CRC-32 of
every byte before it::

    0  "MEST"   4  u16 version (2)   6  u16 header bytes (80)   8  u32 total bytes   12 u32 model CRC-32
    16 u32 n    20 u32 steps_run     24 u32 steps_kept          28 f32 loss_before   32 f32 loss_after
    36 12 reserved zero bytes        48 32 bytes bundle identity (sha256 of manifest.json; zero from firmware)
    80 f32[n] theta                  80 + 4n  u32 CRC-32 of bytes [0, 80 + 4n)

Format 1 (``.npz`` with ``theta``, ``steps_kept`` and ``bundle_theta0_sha256``) is still read.

    identity = BundleIdentity.of(bundle.path, bundle.manifest.files["theta0.npy"])
    write_state(path, StateFile(theta, identity.manifest_sha256, identity.model_crc, steps_run=5, steps_kept=5))
    state = read_state(path, identity, n_theta=theta.size)
"""

from __future__ import annotations

import hashlib
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from .bundle import BundleError

MAGIC = b"MEST"
FORMAT_VERSION = 2
HEADER_BYTES = 80
#: the largest state file read (4 bytes a float: 64 M adapted parameters)
MAX_STATE_BYTES = 256 << 20
_HEADER = struct.Struct("<4sHHIIIIIff12x32s")
_NO_IDENTITY = bytes(32)
_NPZ_MAGIC = b"PK\x03\x04"
assert _HEADER.size == HEADER_BYTES


def mebin_crc(data: bytes) -> int:
    """The CRC-32 field (offset 12) of a model.mebin: the model's identity in format-2 states."""
    if len(data) < 16 or data[:4] != b"MEBN":
        raise BundleError("model.mebin is not a metaedge C model (bad magic or shorter than its header); re-export "
                          "the bundle")
    return int.from_bytes(data[12:16], "little")


@dataclass(frozen=True)
class BundleIdentity:
    """What a saved state must belong to.

    Attributes:
        manifest_sha256: sha256 digest (32 bytes) of the bundle's ``manifest.json`` bytes (which hold every file's
            sha256), written into format-2 states.
        model_crc: the CRC-32 field of the bundle's ``model.mebin`` (0 without one); the only identity firmware
            knows, so a state written by ``me_state_write`` (zero bundle identity) is accepted when it matches.
        theta0_sha256: hex sha256 of ``theta0.npy``, the identity format-1 states carry.
    """

    manifest_sha256: bytes
    model_crc: int = 0
    theta0_sha256: str = ""

    @classmethod
    def of(cls, bundle_dir: str | Path, theta0_sha256: str = "") -> BundleIdentity:
        """The identity of a verified bundle directory (``Bundle.path``)."""
        folder = Path(bundle_dir)
        digest = hashlib.sha256((folder / "manifest.json").read_bytes()).digest()
        mebin = folder / "model.mebin"
        crc = 0
        if mebin.is_file():
            with mebin.open("rb") as f:
                crc = mebin_crc(f.read(16))
        return cls(digest, crc, theta0_sha256)


@dataclass(frozen=True)
class StateFile:
    """One adapted state (format 2).

    Attributes:
        theta: ``(n,)`` float32, the adapted vector in the bundle's layout (prototypes: ``(ways * dim,)``).
        bundle_identity: 32 bytes, :attr:`BundleIdentity.manifest_sha256`, or zeros when firmware wrote it.
        model_crc: :attr:`BundleIdentity.model_crc` of the bundle it was adapted from.
        steps_run, steps_kept: of the adaptation that produced it (0 when unknown).
        loss_before, loss_after: support losses of that adaptation, NaN when unknown.
        format_version: 2 for files written or read in this format, 1 for ``.npz`` files read.
    """

    theta: np.ndarray
    bundle_identity: bytes = _NO_IDENTITY
    model_crc: int = 0
    steps_run: int = 0
    steps_kept: int = 0
    loss_before: float = math.nan
    loss_after: float = math.nan
    format_version: int = field(default=FORMAT_VERSION)

    @property
    def payload_sha256(self) -> str:
        """Hex sha256 of the payload (``theta`` as little-endian float32): the state digest a journal records."""
        return hashlib.sha256(np.ascontiguousarray(self.theta, "<f4").tobytes()).hexdigest()

    def to_bytes(self) -> bytes:
        """The format-2 bytes (``me_state_write``'s layout; identical to it when ``bundle_identity`` is zero)."""
        theta = np.ascontiguousarray(np.asarray(self.theta, np.float32).reshape(-1), "<f4")
        if len(self.bundle_identity) != 32:
            raise ValueError(f"bundle_identity must be 32 bytes, got {len(self.bundle_identity)}")
        if not np.isfinite(theta).all() or theta.size == 0:
            raise ValueError("an adapted state must hold at least one value, all finite")
        total = HEADER_BYTES + 4 * theta.size + 4
        body = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_BYTES, total, self.model_crc, theta.size, self.steps_run,
                            self.steps_kept, self.loss_before, self.loss_after, self.bundle_identity) + theta.tobytes()
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "state") -> StateFile:
        """Parse and check format-2 bytes (structure and CRC; not which bundle: see :func:`read_state`). Bytes after
        the total the header declares are ignored, as ``me_state_read`` does (a dump of a whole flash slot)."""
        if data[:4] != MAGIC[:len(data)] or not data:
            raise BundleError(f"{where} is not an adapted state written by metaedge; adapt again")
        if len(data) < HEADER_BYTES + 4:
            raise BundleError(f"{where} is truncated ({len(data)} bytes, shorter than the {HEADER_BYTES + 4}-byte "
                              "minimum of a state); adapt again")
        (_, version, header, total, model_crc, n, steps_run, steps_kept, loss_before, loss_after,
         identity) = _HEADER.unpack_from(data)
        if version != FORMAT_VERSION:
            raise BundleError(f"{where} is adapted-state format {version}, this runtime reads formats 1 and 2; "
                              "update metaedge or adapt again")
        if header != HEADER_BYTES or total != HEADER_BYTES + 4 * n + 4:
            raise BundleError(f"{where} has an inconsistent header (header {header} bytes, total {total} bytes for "
                              f"{n} values); adapt again")
        if len(data) < total:
            raise BundleError(f"{where} is truncated ({len(data)} of {total} bytes): the write was interrupted or "
                              "the file cut; adapt again")
        (crc,) = struct.unpack_from("<I", data, total - 4)
        if zlib.crc32(data[:total - 4]) != crc:
            raise BundleError(f"{where} is corrupt (CRC-32 mismatch); adapt again")
        if data[36:48] != bytes(12) or steps_kept > steps_run:
            raise BundleError(f"{where} has inconsistent header fields (reserved bytes or step counts); adapt again")
        theta = np.frombuffer(data, "<f4", n, HEADER_BYTES).astype(np.float32)
        if not np.isfinite(theta).all():
            raise BundleError(f"{where} holds NaN or infinite values; adapt again")
        return cls(theta, identity, model_crc, steps_run, steps_kept, loss_before, loss_after)


def write_state(path: str | Path, state: StateFile) -> None:
    """Write ``state`` in format 2, atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, state.to_bytes())


def _read_format1(path: Path) -> tuple[StateFile, str]:
    """A format-1 ``.npz`` (``theta``, ``steps_kept``, ``bundle_theta0_sha256``), loaded without pickle; the state
    and the hex sha256 of the ``theta0.npy`` it was adapted from."""
    try:
        with np.load(path, allow_pickle=False) as z:
            theta, kept, origin = z["theta"], int(z["steps_kept"]), str(z["bundle_theta0_sha256"])
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as e:
        # NotImplementedError: zipfile's answer to an unknown zip version or compression method
        raise BundleError(f"{path} is not an adapted state written by metaedge ({e}); adapt again") from e
    theta = np.asarray(theta)
    if theta.ndim != 1 or theta.dtype.kind != "f" or not np.isfinite(theta).all():
        raise BundleError(f"{path} is not an adapted state written by metaedge (theta must be a finite float "
                          "vector); adapt again")
    return StateFile(theta.astype(np.float32), steps_run=max(kept, 0), steps_kept=kept, format_version=1), origin


def read_state(path: str | Path, expected: BundleIdentity, n_theta: int | None = None,
               prototype_dim: int | None = None) -> StateFile:
    """Read a state of format 2 (or 1) and check that it belongs to the bundle ``expected`` describes.

    Args:
        path: the state file.
        expected: the identity of the bundle it is to be used with.
        n_theta: the bundle's adapted-vector size (parameter states): the state must hold exactly that many values.
        prototype_dim: embedding width (prototype states): the state must hold whole prototypes, at least one.

    Returns:
        The state. Anything else (missing, too large, truncated, corrupt, another bundle's, the wrong size) raises
        :class:`BundleError` with one sentence.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BundleError(f"{path} cannot be read ({e.strerror}); pass the file `metaedge adapt` wrote") from e
    if size > MAX_STATE_BYTES:
        raise BundleError(f"{path} is {size} bytes, more than the {MAX_STATE_BYTES} an adapted state may have; "
                          "pass the file `metaedge adapt` wrote")
    with path.open("rb") as f:
        head = f.read(4)
    if head == _NPZ_MAGIC:
        state, origin = _read_format1(path)
        belongs = bool(expected.theta0_sha256) and origin == expected.theta0_sha256
    else:
        with path.open("rb") as f:
            state = StateFile.from_bytes(f.read(MAX_STATE_BYTES + 1), str(path))
        if state.bundle_identity == _NO_IDENTITY:  # written by firmware: the model CRC is its identity
            belongs = expected.model_crc != 0 and state.model_crc == expected.model_crc
        else:
            belongs = state.bundle_identity == expected.manifest_sha256 and state.model_crc == expected.model_crc
    if not belongs:
        raise BundleError(f"{path} was adapted from a different bundle; adapt again with this bundle")
    n = state.theta.size
    if n_theta is not None and n != n_theta:
        raise BundleError(f"{path} holds {n} values, this bundle's adapted state has {n_theta}; adapt again with "
                          "this bundle")
    if prototype_dim is not None and (n == 0 or n % prototype_dim):
        raise BundleError(f"{path} holds {n} values, not a whole number of {prototype_dim}-wide prototypes; adapt "
                          "again with this bundle")
    return state
