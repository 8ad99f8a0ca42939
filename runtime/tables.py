"""CSV in and out for the device-side commands: columns named as the bundle's inputs and outputs."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError, MissingError

#: largest CSV the device-side commands read, and most data rows: support sets are a handful of rows, prediction
#: inputs a batch; anything beyond these is a wrong file (raise the module constants for bulk scoring)
MAX_CSV_BYTES = 64 << 20
MAX_CSV_ROWS = 1_000_000


def read_columns(path: str | Path, columns: Sequence[str]) -> np.ndarray:
    """The named columns of a CSV file (UTF-8, with a header row), as float32 ``(n, len(columns))``.

    Files over :data:`MAX_CSV_BYTES` or :data:`MAX_CSV_ROWS` rows are refused before or while reading, as are
    undecodable text and malformed CSV, each with one sentence.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingError(f"{path} does not exist; pass a CSV file with columns {', '.join(columns)}")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise _too_large(path)
    line = 1
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark that would otherwise rename the first column
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(_bounded(f, path))
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path} lacks column(s) {', '.join(missing)}; its header must name "
                                 f"{', '.join(columns)}")
            rows = []
            for line, row in enumerate(reader, start=2):
                if len(rows) == MAX_CSV_ROWS:
                    raise InputError(f"{path} has more than {MAX_CSV_ROWS} rows "
                                     "(metaedge.runtime.tables.MAX_CSV_ROWS); split it into smaller files")
                try:
                    rows.append([float(row[c]) for c in columns])
                except (TypeError, ValueError):
                    raise InputError(f"{path} line {line}: every value of {', '.join(columns)} must be a "
                                     "number") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 CSV") from None
    except csv.Error as e:  # e.g. a NUL byte or a field over csv's size limit
        raise InputError(f"{path} line {line + 1} is not valid CSV ({e}); fix or re-export the file") from None
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(columns))


def _too_large(path: Path) -> InputError:
    return InputError(f"{path} is larger than {MAX_CSV_BYTES >> 20} MiB (metaedge.runtime.tables.MAX_CSV_BYTES); "
                      "split it into smaller files")


def _bounded(lines: Iterable[str], path: Path) -> Iterator[str]:
    """``lines``, counted: a file that grows past the limit after its size was checked is refused too."""
    read = 0
    for line in lines:
        read += len(line)
        if read > MAX_CSV_BYTES:
            raise _too_large(path)
        yield line


def write_columns(path: str | Path | None, columns: Sequence[str], values: np.ndarray) -> str:
    """Write ``values`` ``(n, len(columns))`` as CSV to ``path``, or return the CSV text when ``path`` is None."""
    lines = [",".join(columns)] + [",".join(f"{v:.6g}" for v in row) for row in np.asarray(values)]
    text = "\n".join(lines) + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text
