"""The runtime's error types for untrusted bundle data (standard library only; every runtime module may import it)."""

from __future__ import annotations


class BundleError(ValueError):
    """A bundle that is missing, corrupt, tampered with, or newer than this runtime."""


class ManifestError(BundleError):
    """A ``manifest.json`` with a missing or wrongly typed field (the message names it by its dotted path)."""
