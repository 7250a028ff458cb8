"""``dp2o status``: every stage of a run directory — state, counts, fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from dp2o_cli.options import RunDir
from dp2o_cli.output import console, print_json
from rich.markup import escape
from rich.table import Table

from dp2o_core.errors import UsageError
from dp2o_core.store import STAGES, RunStore, StageStatus
from dp2o_core.store.runstore import ShardProgress
from dp2o_core.training.checkpoints import steps_progress

STATE_STYLE = {"done": "green", "partial": "yellow", "stale": "red", "damaged": "bold red", "missing": "dim"}


def status(
    run: RunDir,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON with stable keys, not a table.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Also check that every image and latent file the stages wrote is still there "
            "(one stat per file); groups with a missing file are marked damaged.",
        ),
    ] = False,
) -> None:
    """Show each stage of RUN: done, partial, stale, damaged or missing, with counts and fingerprints.

    A run of several rounds (dp2o train --rounds K) shows every round's stages.
    """
    from dp2o_core.pipeline.rounds import round_dir, round_numbers, round_statuses

    if not run.is_dir():
        raise UsageError(f"run directory {run} does not exist")
    rounds = {number: RunStore(round_dir(run, number)) for number in round_numbers(run)}
    several = len(rounds) > 1
    problems = [
        (_label(stage, number) if several else stage, *bad)
        for number, round_store in rounds.items()
        for stage in STAGES
        if verify and not (number > 1 and stage == "data" and round_store.stage_dir(stage).is_symlink())
        for bad in round_store.verify_files(stage)
    ]
    statuses = round_statuses(run)
    shards = {
        (number, stage): progress
        for number, round_store in rounds.items()
        for stage in STAGES
        if (progress := round_store.shard_progress(stage)) is not None
    }
    if as_json:
        record: dict = {
            "run": str(run),
            "stages": [_stage_record(s, shards.get((1, s.stage))) for s in statuses[1]],
        }
        if several:
            record["rounds"] = [
                {"round": number, "stages": [_stage_record(s, shards.get((number, s.stage))) for s in found]}
                for number, found in statuses.items()
                if number > 1
            ]
        if verify:
            record["damaged_files"] = [
                {"stage": stage, "group_id": group, "file": file, "problem": problem}
                for stage, group, file, problem in problems
            ]
        print_json(record)
        return
    console.print(_status_table(run, rounds, statuses))
    for (number, stage), progress in shards.items():
        label = _label(stage, number) if several else stage
        for line in _shard_lines(progress):
            console.print(f"{label}: {escape(line)}")
    if verify:
        for stage, group, file, problem in problems[:20]:
            console.print(f"[red]damaged[/] {stage}: {escape(f'{file} (group {group!r}) {problem}')}")
        more = f" ({len(problems) - 20} more not shown)" if len(problems) > 20 else ""
        console.print(
            f"verify: {len(problems)} damaged file(s){more}; rerun the stages marked damaged to redo them"
            if problems
            else "verify: every file the stages wrote is there"
        )


def _stage_record(status: StageStatus, shards: list[ShardProgress] | None) -> dict:
    """A stage's JSON record, with its shards' progress where shard jobs fill it."""
    record = status.as_record()
    if shards is not None:
        record["shards"] = [p.as_record() for p in shards]
    return record


def _shard_lines(progress: list[ShardProgress]) -> list[str]:
    """What ``dp2o status`` says of a stage that shard jobs fill: a summary, then each shard
    that is not finished (running or missing)."""
    left = [p for p in progress if not p.finished]
    if not left:
        return [f"{len(progress)} shard jobs — all finished"]
    running = sum(p.holder is not None for p in left)
    summary = (
        f"{len(progress)} shard jobs — {len(progress) - len(left)} finished, {running} running, "
        f"{len(left) - running} missing (not finished, no job running)"
    )
    return [summary, *(p.describe() for p in left)]


def _status_table(run: Path, rounds: dict[int, RunStore], statuses: dict[int, list[StageStatus]]) -> Table:
    """One row per stage (of every round, for a run of several)."""
    table = Table(title=f"run {escape(str(run))}", title_justify="left")
    for column in ("Stage", "State", "Groups", "Rows", "Fingerprint", "Inputs", "Updated"):
        table.add_column(column)
    for number, round_store in rounds.items():
        for s in statuses[number]:
            style = STATE_STYLE[s.state]
            state = f"[{style}]{s.state}[/]" + (f"\n{escape(s.reason)}" if s.reason else "")
            groups = f"{s.groups_done}/{s.groups_total}" if s.groups_total is not None else "-"
            if s.stage in ("train", "pretrain") and s.state != "missing":
                done, total = steps_progress(round_store, s.stage)
                groups = f"steps {done}/{total if total is not None else '?'}"
            rows = "\n".join(f"{name}: {count}" for name, count in sorted(s.rows.items())) or "-"
            inputs = "\n".join(f"{name}: {fp}" for name, fp in s.inputs.items()) or "-"
            label = _label(s.stage, number) if len(rounds) > 1 else s.stage
            table.add_row(label, state, groups, rows, s.fingerprint or "-", inputs, s.updated or "-")
    return table


def _label(stage: str, number: int) -> str:
    """A stage's name in a run of several rounds."""
    return f"{stage} (round {number})"
