"""The project's error types: bad input, reported to a user as one sentence.

Everything metaedge raises because of what it was given (a wrong shape, NaN, a corrupt bundle, a missing file,
an unknown option) is a :class:`MetaedgeError`; the CLI prints such an error as one line and exits with status 1.
Any other exception is a bug in metaedge and keeps its traceback.

This module lives in the thin root package on purpose: Python imports ``metaedge/__init__`` (stdlib only) before
any of ``metaedge.sdk``, ``metaedge.runtime``, ``metaedge.devices`` or ``metaedge.export``, so each of them can
import these types without a new dependency edge between them (``devices`` and ``runtime`` stay free of torch,
``sdk`` free of the runtime). Each concrete type also derives from the built-in exception it refines, so callers
that catch ``ValueError`` or ``FileNotFoundError`` keep working.
"""

from __future__ import annotations


class MetaedgeError(Exception):
    """Base of every error that means "bad input": its message is one sentence saying what and what to do."""


class InputError(MetaedgeError, ValueError):
    """A value, shape, option or file content that metaedge cannot use."""


class MissingError(MetaedgeError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class ExistsError(MetaedgeError, FileExistsError):
    """An output path the user named already exists (metaedge never overwrites)."""


class DivergedError(MetaedgeError, FloatingPointError):
    """Training produced non-finite numbers (e.g. a too large step size)."""


class UnavailableError(MetaedgeError, RuntimeError):
    """A backend or library the user asked for is not available on this machine (TensorRT, the C library)."""


__all__ = ["DivergedError", "ExistsError", "InputError", "MetaedgeError", "MissingError", "UnavailableError"]
