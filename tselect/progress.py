"""Progress on stderr, the one place stages report progress from.

Stages call `track(...)` or `bar(...)`. On a terminal (or with TSELECT_PROGRESS=1) that is a rich
bar; when stderr is a pipe or a file (nohup, Slurm, CI) it is one plain line every
TSELECT_PROGRESS_INTERVAL seconds (default 30), so a long job's log shows it is alive.
TSELECT_PROGRESS=0 or `tselect -q` turns progress off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

# -1 quiet (-q), 0 normal, 1 verbose (-v); set once by the CLI's global options.
VERBOSITY = 0
DEFAULT_INTERVAL = 30.0


def mode() -> str:
    """'bar' (rich), 'lines' (plain periodic lines) or 'off'."""
    if VERBOSITY < 0:
        return "off"
    flag = os.environ.get("TSELECT_PROGRESS")
    if flag is not None:
        if flag in ("0", "", "false", "off"):
            return "off"
        return "lines" if flag == "lines" else "bar"
    return "bar" if sys.stderr.isatty() else "lines"


def enabled() -> bool:
    return mode() != "off"


def interval() -> float:
    raw = os.environ.get("TSELECT_PROGRESS_INTERVAL")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def line(description: str, done: int, total: int | None, elapsed: float, unit: str = "rows") -> str:
    """'featurize pool: 1,234/10,000 rows (12%), 3.2 rows/s, eta 45 min' (no total: no %, no eta)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"{description}: {done:,}" + (f"/{total:,}" if total else "") + f" {unit}"
    if total:
        text += f" ({100 * done / total:.0f}%)"
    text += f", {rate:.3g} {unit}/s"
    if total and rate > 0:
        text += f", eta {_duration((total - done) / rate)}"
    return text


class _Lines:
    """Counts advances and prints a plain line on stderr at most every `interval()` seconds."""

    def __init__(self, total: int | None, description: str) -> None:
        self.total, self.description, self.done = total, description, 0
        self.start = self.last = time.monotonic()
        self.every = interval()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(line(self.description, self.done, self.total, now - self.start), file=sys.stderr, flush=True)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed >= self.every:  # short steps stay silent; long ones say they ended
            print(f"{self.description}: {self.done:,} done in {_duration(elapsed)}", file=sys.stderr, flush=True)


def _rich(total: int | None, description: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=False)


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    with bar(total, description) as b:
        for item in items:
            yield item
            b.advance(1)


class _Null:
    def advance(self, n: int = 1) -> None:
        pass


@contextmanager
def bar(total: int | None, description: str) -> Iterator["_Null"]:
    """A progress bar advanced by hand (`b.advance(n)`), for work finer than one loop item."""
    kind = mode()
    if kind == "off":
        yield _Null()
        return
    if kind == "lines":
        lines = _Lines(total, description)
        yield lines
        lines.finish()
        return
    with _rich(total, description) as p:
        task = p.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                p.advance(task, n)

        yield _Bar()


def note(message: str) -> None:
    """A one-line status message on stderr (never stdout, which carries artifact ids); silent under -q."""
    if VERBOSITY < 0:
        return
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message)


def debug(message: str) -> None:
    """A detail shown only under -v."""
    if VERBOSITY > 0:
        note(message)
