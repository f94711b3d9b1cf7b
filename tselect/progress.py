"""Progress bars on stderr (rich), the one place stages report progress from.

Stages call `track(...)`; the bar is drawn only when stderr is a terminal or
TSELECT_PROGRESS=1, so logs and CI output stay clean.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    flag = os.environ.get("TSELECT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false")
    return sys.stderr.isatty()


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    if not enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


class _Null:
    def advance(self, n: int = 1) -> None:
        pass


@contextmanager
def bar(total: int, description: str) -> Iterator["_Null"]:
    """A progress bar advanced by hand (`b.advance(n)`), for work finer than one loop item."""
    if not enabled():
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as p:
        task = p.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                p.advance(task, n)

        yield _Bar()


def note(message: str) -> None:
    """A one-line status message on stderr (never stdout, which carries artifact ids)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message)
