"""CSV in and out for the device-side commands: columns named as the bundle's inputs and outputs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def read_columns(path: str | Path, columns: Sequence[str]) -> np.ndarray:
    """The named columns of a CSV file with a header row, as float32 ``(n, len(columns))``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a CSV file with columns {', '.join(columns)}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; its header must name "
                             f"{', '.join(columns)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[c]) for c in columns])
            except (TypeError, ValueError):
                raise ValueError(f"{path} line {line}: every value of {', '.join(columns)} must be a number") from None
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(columns))


def write_columns(path: str | Path | None, columns: Sequence[str], values: np.ndarray) -> str:
    """Write ``values`` ``(n, len(columns))`` as CSV to ``path``, or return the CSV text when ``path`` is None."""
    lines = [",".join(columns)] + [",".join(f"{v:.6g}" for v in row) for row in np.asarray(values)]
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
