"""Pieces shared by the benchmark drivers and their subprocess workers; stdlib only, so a worker that must
not import torch (the on-device runtime's) can use them too.

Worker protocol: one JSON command per line on stdin (``setup`` / ``check`` / ``run`` / ``quit``), one reply
per line on stdout prefixed with :data:`MARK`, so stray prints from libraries cannot be mistaken for replies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MARK = "@@WORKER@@"


def serve(worker: Any) -> None:
    """Answer the driver's line protocol on stdin/stdout with ``worker`` (``setup``, ``check``, ``run`` methods)."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        try:
            if msg["cmd"] == "setup":
                reply = worker.setup(msg)
            elif msg["cmd"] == "check":
                reply = worker.check(msg["out"])
            elif msg["cmd"] == "run":
                reply = worker.run(int(msg["iters"]))
            else:
                raise ValueError(f"unknown command {msg['cmd']!r}")
            reply = {"ok": True, **reply}
        except Exception as exc:  # report to the driver instead of dying silently
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(f"{MARK} {json.dumps(reply)}\n")
        sys.stdout.flush()


def write_json(out: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``out`` through a temporary file, so an interrupted run never leaves half a JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(record, indent=2) + "\n")
    tmp_out.replace(out)
