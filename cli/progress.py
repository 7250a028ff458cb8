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
)
from rich.text import Text

from dp2o_core.pipeline import Reporter


def average_rate(task) -> float | None:
    """Items per second since the task started: what was done over the time it took. (rich's
    own speed looks at the last updates only, and work that finishes in bursts — a packed
    sampling call committing several groups at once — reads as a rate it never had.)"""
    elapsed = task.elapsed
    if not elapsed or not task.completed:
        return None
    return float(task.completed) / elapsed


class RateColumn(ProgressColumn):
    """Items per second of the task since it started (a sampler's or scorer's throughput)."""

    def render(self, task) -> Text:
        speed = average_rate(task)
        return Text(f"{speed:.2f}/s" if speed else "-/s")


class RemainingColumn(ProgressColumn):
    """Time left at the task's average rate so far."""

    def render(self, task) -> Text:
        speed = average_rate(task)
        if task.total is None or not speed:
            return Text("-:--:--")
        seconds = max(0, int((task.total - task.completed) / speed))
        return Text(f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}")


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
        RemainingColumn(),
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
