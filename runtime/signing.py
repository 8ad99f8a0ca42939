"""Ed25519 signatures over a bundle's ``manifest.json`` (which holds the sha256 of every other file).

``metaedge keygen KEY`` writes ``KEY`` (PKCS#8 PEM private key, mode 0600) and ``KEY.pub`` (PEM public key);
``metaedge export RUN -o B --sign KEY`` writes ``manifest.sig`` next to the manifest::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}

``key_id`` is the first 16 hex digits of the sha256 of the 32-byte raw public key. The signature covers the exact
bytes of ``manifest.json``, so editing the manifest breaks the signature and editing a listed file breaks its
sha256. A device trusts the public keys passed as ``trust`` (``--trust KEY.pub``) or, when none are passed, those
listed in ``METAEDGE_TRUST`` (``os.pathsep``-separated ``.pub`` paths); once any key is trusted, a bundle must be
signed by one of them.

``cryptography`` is imported only when a key is made, loaded or checked: a device that trusts no key runs
unsigned bundles without it. This module must not import torch, onnx or ``metaedge.sdk``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .bundle import BundleError, _read_bounded

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "ed25519"
#: the signature file beside ``manifest.json``
SIGNATURE_FILE = "manifest.sig"
#: environment variable listing trusted public keys when no ``trust`` is passed
TRUST_ENV = "METAEDGE_TRUST"
#: largest key or signature file read (real ones are under 200 bytes)
MAX_KEY_BYTES = 16 << 10


class SignatureError(BundleError):
    """A bundle that is unsigned, signed by an untrusted key, or whose manifest was changed after signing."""


class KeyFileError(InputError):
    """A key file that is missing, unreadable, not an Ed25519 key written by ``metaedge keygen``, or (for keygen)
    already there."""


def _crypto():
    """The ``cryptography`` modules this file uses, or one sentence saying what to install."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise SignatureError("signed bundles need the `cryptography` package, which is not installed here; "
                             "run `pip install cryptography` (or `pip install metaedge[runtime]`), or configure no "
                             f"trusted keys (no --trust, no {TRUST_ENV}) to run unsigned bundles") from e
    return serialization, ed25519, InvalidSignature


def key_id(raw_public: bytes) -> str:
    """First 16 hex digits of the sha256 of a 32-byte raw Ed25519 public key."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKey:
    """An Ed25519 public key a device accepts bundles from."""

    raw: bytes
    source: str

    @property
    def key_id(self) -> str:
        return key_id(self.raw)


@dataclass(frozen=True)
class Signature:
    """The parsed ``manifest.sig``."""

    algorithm: str
    key_id: str
    signature: bytes

    @classmethod
    def parse(cls, data: bytes, where: str) -> Signature:
        """``manifest.sig`` bytes -> Signature; anything malformed is one :class:`SignatureError` sentence."""
        try:
            d = json.loads(data)
            fields = (d["algorithm"], d["key_id"], d["signature"]) if isinstance(d, dict) else None
            if fields is None or not all(isinstance(f, str) for f in fields):
                raise ValueError("not an object of strings")
            sig = base64.b64decode(fields[2], validate=True)
        except (ValueError, KeyError, binascii.Error) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
            raise SignatureError(f"{where}: {SIGNATURE_FILE} is not a metaedge signature ({e.__class__.__name__}: "
                                 f"{e}); re-sign the bundle with `metaedge export --sign KEY`") from None
        if fields[0] != ALGORITHM or len(sig) != 64:
            raise SignatureError(f"{where}: {SIGNATURE_FILE} holds a {fields[0]!r} signature of {len(sig)} bytes but "
                                 f"this runtime verifies {ALGORITHM} (64 bytes); re-sign the bundle with metaedge")
        return cls(fields[0], fields[1], sig)

    def to_json(self) -> str:
        return json.dumps({"algorithm": self.algorithm, "key_id": self.key_id,
                           "signature": base64.b64encode(self.signature).decode("ascii")}, indent=2) + "\n"


def signature_bytes(bundle_dir: str | Path, where: str | Path | None = None) -> bytes | None:
    """The bytes of a bundle directory's ``manifest.sig`` (at most :data:`MAX_KEY_BYTES`; larger is a
    :class:`BundleError`), or None when the bundle is unsigned (no such plain file: a link does not count)."""
    path = Path(bundle_dir) / SIGNATURE_FILE
    if not path.is_file() or path.is_symlink():
        return None
    return _read_bounded(path, MAX_KEY_BYTES, Path(where or bundle_dir))


def signing_key_id(bundle_dir: str | Path) -> str | None:
    """The key id a bundle directory's ``manifest.sig`` names (None when unsigned); not a verification, which
    :meth:`Bundle.open` does against trusted keys."""
    data = signature_bytes(bundle_dir)
    return None if data is None else Signature.parse(data, str(Path(bundle_dir) / SIGNATURE_FILE)).key_id


def _read_key_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise KeyFileError(f"{what} {path} does not exist; pass the file that `metaedge keygen` wrote")
    with open(path, "rb") as f:
        data = f.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise KeyFileError(f"{what} {path} is larger than {MAX_KEY_BYTES} bytes, so it is no key file; pass the file "
                           "that `metaedge keygen` wrote")
    return data


def generate_key(path: str | Path) -> TrustedKey:
    """Write a new Ed25519 private key to ``path`` (PKCS#8 PEM, unencrypted, mode 0600) and its public key to
    ``path.pub``; refuses to overwrite either. Returns the public key."""
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    for p in (path, public_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError(f"{p} already exists; remove it or choose another key name (a key is never "
                               "overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public = key.public_key()
    public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never follow or replace an existing file; 0600 from creation, not chmod-ed afterwards
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    try:
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem)
    except BaseException:
        path.unlink()
        raise
    return TrustedKey(_raw_public(key), str(public_path))


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (as ``metaedge keygen`` writes it)."""
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:  # not PEM, encrypted, or unsupported
        raise KeyFileError(f"signing key {path} is not an unencrypted PEM private key ({e}); pass the private key "
                           "that `metaedge keygen` wrote (not the .pub)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"signing key {path} is a {type(key).__name__}, not an Ed25519 key; make one with "
                           "`metaedge keygen`")
    return key


def load_public_key(path: str | Path) -> TrustedKey:
    """The Ed25519 public key in ``path`` (a ``.pub`` written by ``metaedge keygen``)."""
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    data = _read_key_file(path, "trusted key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"trusted key {path} is not a PEM public key ({e}); pass the .pub file that "
                           "`metaedge keygen` wrote") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"trusted key {path} is a {type(key).__name__}, not an Ed25519 key; pass the .pub file "
                           "that `metaedge keygen` wrote")
    return TrustedKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), str(path))


def trusted_keys(trust: Iterable[str | Path | TrustedKey] | None = None) -> tuple[TrustedKey, ...]:
    """The keys a bundle must be signed by: ``trust`` when given (even empty: then none), else the paths in
    ``METAEDGE_TRUST``. An empty result means signatures are not required."""
    if trust is None:
        trust = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p.strip()]
    return tuple(t if isinstance(t, TrustedKey) else load_public_key(t) for t in trust)


def sign_bundle(directory: str | Path, key_path: str | Path) -> TrustedKey:
    """Sign ``directory/manifest.json`` with the private key at ``key_path``; writes ``manifest.sig`` beside it and
    returns the public key that verifies it.

    Call it after the manifest's last change: any later edit breaks the signature. The bundle's files are checked
    against their hashes first, so a damaged or altered bundle is never signed."""
    from .bundle import Bundle

    directory = Path(directory)
    key = load_private_key(key_path)
    Bundle.open(directory, trust=())
    public = TrustedKey(_raw_public(key), f"the public key of {key_path}")
    signature = Signature(ALGORITHM, public.key_id, key.sign((directory / "manifest.json").read_bytes()))
    (directory / SIGNATURE_FILE).write_text(signature.to_json())
    return public


def public_key_of(key_path: str | Path) -> TrustedKey:
    """The public key of the private key at ``key_path``."""
    return TrustedKey(_raw_public(load_private_key(key_path)), f"the public key of {key_path}")


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    serialization, _, _ = _crypto()
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_manifest(where: str | Path, manifest: bytes, signature: bytes | None,
                    keys: tuple[TrustedKey, ...]) -> TrustedKey | None:
    """Check that ``signature`` (the bytes of ``manifest.sig``, None when absent) is a valid signature of the exact
    ``manifest`` bytes by one of ``keys``; returns that key, or None when ``keys`` is empty (nothing required).

    Raises :class:`SignatureError` with one sentence when the bundle is unsigned, signed by a key not in ``keys``,
    or its manifest changed after signing."""
    if not keys:
        return None
    _, ed25519, invalid = _crypto()
    trusted = ", ".join(k.key_id for k in keys)
    if signature is None:
        raise SignatureError(f"{where} is not signed (no {SIGNATURE_FILE}) but this device only accepts bundles "
                             f"signed by trusted keys ({trusted}); export it with `metaedge export --sign KEY`")
    sig = Signature.parse(signature, str(where))
    key = next((k for k in keys if k.key_id == sig.key_id), None)
    if key is None:
        raise SignatureError(f"{where} is signed by key {sig.key_id}, which is not trusted here (trusted: {trusted}); "
                             "pass that key's .pub with --trust or re-sign the bundle with a trusted key")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key.raw).verify(sig.signature, manifest)
    except invalid:
        raise SignatureError(f"{where}: manifest.json does not match its signature by trusted key {key.key_id}; the "
                             "manifest was changed after signing, so re-export and sign the bundle again") from None
    return key
