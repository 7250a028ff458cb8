"""One rich progress bar for a stage, shown by process 0 only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dp2o_cli.output import console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second of the task (what a sampler's or scorer's throughput is)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f}/s" if speed else "-/s")


@contextmanager
def stage_progress(
    stage: str, show: bool, unit: str = "groups"
) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """Yield (start(total), advance(count)) callbacks that drive a progress bar with a rate."""
    with Progress(
        TextColumn(f"[bold]{stage}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        RateColumn(),
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
