"""Progress bars and stage lines on the terminal, shown by process 0 only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dp2o_cli.output import console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from dp2o_core.pipeline import Reporter


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
        callbacks: list[Callbacks] = []
        for stage, unit in stages:
            task = progress.add_task(stage, total=None, unit=unit, note="", start=False)

            def start(total: int, task=task) -> None:
                progress.start_task(task)
                progress.update(task, total=total)

            def advance(count: int, note: str | None = None, task=task) -> None:
                fields: dict[str, Any] = {"note": note} if note is not None else {}
                progress.update(task, advance=count, **fields)

            callbacks.append((start, advance))
        yield callbacks


class ConsoleReporter(Reporter):
    """The pipeline's reporter for the terminal: stage lines and progress bars on process 0."""

    def __init__(self, show: bool) -> None:
        self.show = show

    def announce(self, stage: str, text: str) -> None:
        """``stage: text`` in bold, the text escaped (it may quote file names and options)."""
        if self.show:
            console.print(f"[bold]{stage}[/]: {escape(text)}", soft_wrap=True)

    def note(self, stage: str, text: str) -> None:
        """The text, indented under the stage's line."""
        if self.show:
            console.print(f"  {text}", soft_wrap=True, markup=False)

    @contextmanager
    def progress(self, bars: Sequence[tuple[str, str]]) -> Iterator[list[Callbacks]]:
        """One bar per (label, unit), drawn while the block runs."""
        with stages_progress(self.show, list(bars)) as callbacks:
            yield callbacks
