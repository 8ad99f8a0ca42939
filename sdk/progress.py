"""Progress on long work that suits where it is shown.

On a terminal: a tqdm bar, redrawn in place. Anywhere else (a log file, a pipe, CI): tqdm's carriage-return
redraws would pile up as one update per refresh, so a plain line is printed at most every ``interval`` seconds
and once at the end, e.g. ``maml sinusoid: 1200/5000 it (24%), 410.2 it/s, loss=0.2310``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

#: seconds between two progress lines when the stream is not a terminal
LOG_INTERVAL = 30.0


class LineProgress:
    """The subset of tqdm's interface the trainer and evaluator use, writing whole lines at a bounded rate."""

    def __init__(self, iterable: Iterable | None, total: int, desc: str, unit: str, initial: int = 0,
                 file: IO[str] | None = None, interval: float = LOG_INTERVAL, clock=time.monotonic) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self._start_n = initial, initial
        self.file, self.interval, self.clock = file, interval, clock
        self._postfix = ""
        self._t0 = self._last = clock()
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._write(now)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write(self.clock())

    def _write(self, now: float) -> None:
        elapsed = max(now - self._t0, 1e-9)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        line = (f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, "
                f"{(self.n - self._start_n) / elapsed:.1f} {self.unit}/s" + (f", {self._postfix}" if self._postfix
                                                                              else ""))
        print(line, file=self.file or sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, *, total: int, desc: str, unit: str, enabled: bool = True,
             initial: int = 0, file: IO[str] | None = None) -> tqdm | LineProgress:
    """A progress bar over ``iterable`` (or updated by hand): tqdm on a terminal, bounded-rate lines elsewhere,
    silent (but still iterable) when ``enabled`` is False."""
    stream = file or sys.stderr
    if enabled and not (hasattr(stream, "isatty") and stream.isatty()):
        return LineProgress(iterable, total, desc, unit, initial=initial, file=stream)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not enabled, file=stream)
