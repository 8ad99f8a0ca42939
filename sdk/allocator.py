"""glibc allocator thresholds for CPU training and evaluation: large blocks stay in the heap, not fresh ``mmap``s.

With glibc's defaults every allocation above the (dynamic, at most 32 MiB) mmap threshold is a fresh ``mmap``,
and freed heap memory is trimmed back to the system: a Conv4 training step allocates and frees its activations
(40 MB for a 20-way ProtoNet episode's first layer) each step, so each step page-faults them in again. That was
about 40% of a ProtoNet step here (``benchmarks/classification_speed.py``). Raising both thresholds to 1 GiB
keeps the pages mapped and reused: the cost is that the process's resident memory stays at its peak.

:func:`tune_allocator` sets them with ``mallopt`` (through ctypes) once per process; the trainer and the evaluator
call it (Omniglot ProtoNet evaluation: 8.5 s -> 3.6 s). It leaves an allocator the user configured alone
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) and is
a no-op, with one debug log line, where the C library is not glibc (macOS, musl, Windows).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: both thresholds: blocks below it come from the heap, free heap memory below it is kept (1 GiB)
THRESHOLD = 1 << 30
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`THRESHOLD` (once per process).

    Returns whether this process now runs with them (False: not glibc, refused, or the user's own settings kept).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if any(k in os.environ for k in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        log.debug("allocator thresholds left as the environment sets them")
        return False
    libc_name, _ = platform.libc_ver()
    if libc_name != "glibc":
        log.debug("allocator thresholds not set: the C library is %s, not glibc", libc_name or "unknown")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("allocator thresholds not set: mallopt is not available")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first: setting it also stops its dynamic adjustment
    _applied = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    if not _applied:
        log.debug("allocator thresholds not set: mallopt refused %d", THRESHOLD)
    return _applied
