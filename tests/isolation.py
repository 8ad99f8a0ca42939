"""Run a snippet in a fresh interpreter with some packages made unimportable: how the layering tests prove that a
part never imports what it must not (the runtime: torch, onnx, sdk, export; the knowledge base: torch, sdk, export;
a device without ``cryptography``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

#: what the torch-free parts (runtime, knowledge) must run without
SERVER_ONLY = ("torch", "onnx", "metaedge.sdk", "metaedge.export")

_PRELUDE = """\
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def run_without(code: str, blocked: tuple[str, ...] = SERVER_ONLY, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) in a new Python process where importing any of ``blocked`` (a package or a module
    and everything below it) raises ImportError; returns the finished process (stdout and stderr as text)."""
    script = _PRELUDE.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
