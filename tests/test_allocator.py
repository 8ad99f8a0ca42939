"""The trainer's glibc allocator thresholds (``metaedge.sdk.allocator``), each case in a fresh process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# glibc reports no thresholds; what is observable is where a 64 MiB block comes from: mallinfo2's hblkhd counts
# the bytes of mmap'd chunks, so it stays below 64 MiB when the block came from the heap.
PROBE = """
import ctypes, os, sys
from metaedge.sdk.allocator import tune_allocator
applied = tune_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
p = libc.malloc(64 << 20)
info = libc.mallinfo2()
print(int(applied), int(info.hblkhd >= 64 << 20), tune_allocator() is applied)
"""


def _probe(env_extra: dict[str, str]) -> list[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **env_extra}, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_tune_allocator_keeps_large_blocks_in_the_heap():
    # applied, the 64 MiB block is not an mmap'd chunk (hblkhd counts mmap'd bytes); once per process
    assert _probe({}) == ["1", "0", "True"]
    # the user's own setting wins: nothing applied, glibc's default mmaps the block
    assert _probe({"MALLOC_MMAP_THRESHOLD_": "131072"}) == ["0", "1", "True"]
