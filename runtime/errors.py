"""The runtime's error types for untrusted bundle data (standard library only; every runtime module may import it).

They are :class:`metaedge.errors.InputError` s, so the CLI reports them as one sentence."""

from __future__ import annotations

from ..errors import InputError


class BundleError(InputError):
    """A bundle that is missing, corrupt, tampered with, or newer than this runtime."""


class ManifestError(BundleError):
    """A ``manifest.json`` with a missing or wrongly typed field (the message names it by its dotted path)."""
