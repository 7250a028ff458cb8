"""One rich progress bar for a stage, shown by process 0 only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dp2o_cli.output import console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def stage_progress(stage: str, show: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield (start(total), advance(count)) callbacks that drive a progress bar."""
    with Progress(
        TextColumn(f"[bold]{stage}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    ) as progress:
        task = progress.add_task(stage, total=None)

        def start(total: int) -> None:
            progress.update(task, total=total)

        def advance(count: int) -> None:
            progress.advance(task, count)

        yield start, advance
