"""The bench's progress bar on the terminal."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class _Progress:
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def phase(self, description: str, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n)
