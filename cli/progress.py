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


Callbacks = tuple[Callable[[int], None], Callable[..., None]]


@contextmanager
def stage_progress(stage: str, show: bool, unit: str = "groups") -> Iterator[Callbacks]:
    """Yield (start(total), advance(count, note=None)) callbacks that drive a progress bar with
    a rate; ``note`` replaces the text after the bar (e.g. the latest loss)."""
    with stages_progress(show, [(stage, unit)]) as (callbacks,):
        yield callbacks


@contextmanager
def stages_progress(show: bool, stages: list[tuple[str, str]]) -> Iterator[list[Callbacks]]:
    """One display with a bar per (stage, unit), for work that runs one part after another."""
    with Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        RateColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        disable=not show,
    ) as progress:
        callbacks = []
        for stage, unit in stages:
            task = progress.add_task(stage, total=None, unit=unit, note="", start=False)

            def start(total: int, task=task) -> None:
                progress.start_task(task)
                progress.update(task, total=total)

            def advance(count: int, note: str | None = None, task=task) -> None:
                progress.update(task, advance=count, **({"note": note} if note is not None else {}))

            callbacks.append((start, advance))
        yield callbacks
