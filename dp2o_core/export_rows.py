"""The rows of ``dp2o export``, built column by column at any scale.

A run of the paper's size has 7.68 M pairs (76.8 M at ten times it). Every step here works
on Arrow columns and NumPy arrays — no Python object per pair — and memory holds one block
of pairs and its groups' candidates:

1. the pairs stage's commits are read in turn, each sorted by group, winner, loser, and
   joined into blocks of about a million pairs (the order is fixed for a run and does not
   depend on the block size);
2. the sample stage's candidate rows are read once and spread over one scratch file per
   block (a partitioned join: each block then reads only its own groups' candidates,
   instead of every block scanning the whole candidates table);
3. which image goes in column 0 is bit 0 of ``derive_seed(0, "export", group, winner,
   loser)``, a fixed pseudo-random choice per pair; its SHA-256 is most of the time, so a
   large run hashes on every core in spawned worker processes.
"""

from __future__ import annotations

import bisect
import contextlib
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.store import RunStore

#: Blocks with fewer pairs are hashed in this process (a pool's round trip would not pay).
PARALLEL_PAIRS = 200_000
SORT_KEYS = [("group_id", "ascending"), ("winner", "ascending"), ("loser", "ascending")]


def pair_columns(
    store: RunStore, block_pairs: int = 1_000_000, cores: int | None = None, scratch: Path | None = None
) -> Iterator[Any]:
    """The export's rows as pyarrow Tables of whole groups (at least ``block_pairs`` rows
    each, but the last), with the image paths to read in ``path_0``, ``path_1`` and
    ``path_lr``.

    ``cores``: how many cores hash the swap decisions of a large run (default: those this
    process may use). ``scratch``: a folder for the candidates spread by block (default: a
    temporary one); it holds about the size of the candidates table's paths while the rows
    are read and is emptied after.
    """
    cores = cores or _usable_cores()
    large = store.status("pairs").rows.get("pairs", 0) >= PARALLEL_PAIRS
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="candidates-", dir=scratch)))
        pool = stack.enter_context(_hash_pool(cores - 1 if large else 0))
        groups = store.read_table("data", "groups", columns=["group_id", "lr", "prompt"])
        block_ids = [_unique_ids(block) for block in _commit_blocks(store, block_pairs, ["group_id"])]
        bucket_files = _spread_candidates(store, block_ids, folder)
        blocks = _commit_blocks(store, block_pairs)
        for ids, block, bucket_file in zip(block_ids, blocks, bucket_files, strict=True):
            yield _block_rows(block, ids, groups, bucket_file, pool, cores)
            bucket_file.unlink()


def _block_rows(
    block: Any, ids: Any, groups: Any, bucket_file: Path, pool: Executor | None, cores: int
) -> Any:
    """The export's columns for one block of sorted pairs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    winner = block.column("winner").to_numpy().astype(np.int64)
    loser = block.column("loser").to_numpy().astype(np.int64)
    group_of_pair = pc.index_in(block.column("group_id"), value_set=ids).to_numpy()
    swap = swap_flags(ids.to_pylist(), group_of_pair, winner, loser, pool, cores)
    first, second = np.where(swap, loser, winner), np.where(swap, winner, loser)
    path_0, path_1 = _candidate_images(bucket_file, ids, group_of_pair, first, second)
    group_rows = pc.index_in(ids, value_set=groups.column("group_id")).to_numpy()[group_of_pair]
    winner_reward = block.column("winner_reward").to_numpy()
    loser_reward = block.column("loser_reward").to_numpy()
    return pa.table(
        {
            "label_0": np.where(swap, 0.0, 1.0),
            "caption": pc.fill_null(groups.column("prompt").take(group_rows), ""),
            "group_id": block.column("group_id"),
            "candidate_0": first.astype(np.int32),
            "candidate_1": second.astype(np.int32),
            "reward_0": np.where(swap, loser_reward, winner_reward).astype(np.float64),
            "reward_1": np.where(swap, winner_reward, loser_reward).astype(np.float64),
            "weight": block.column("weight").cast(pa.float64()),
            "intra_weight": block.column("intra_weight").cast(pa.float64()),
            "inter_weight": block.column("inter_weight").cast(pa.float64()),
            "path_0": path_0,
            "path_1": path_1,
            "path_lr": groups.column("lr").take(group_rows),
        }
    )


def _commit_blocks(store: RunStore, block_pairs: int, columns: list[str] | None = None) -> Iterator[Any]:
    """The pairs table's commits in turn, each sorted by group, winner, loser, joined into
    blocks of at least ``block_pairs`` rows. The cuts depend only on the commits' row
    counts, so reading fewer ``columns`` gives the same blocks."""
    import pyarrow as pa

    pieces: list[Any] = []
    rows = 0
    for commit in store.iter_table_blocks("pairs", "pairs", columns=columns, min_rows=1):
        pieces.append(commit.sort_by(SORT_KEYS) if columns is None else commit)
        rows += commit.num_rows
        if rows >= block_pairs:
            yield pa.concat_tables(pieces)
            pieces, rows = [], 0
    if pieces:
        yield pa.concat_tables(pieces)


def _unique_ids(block: Any) -> Any:
    import pyarrow.compute as pc

    return pc.unique(block.column("group_id").combine_chunks())


def _spread_candidates(store: RunStore, block_ids: list[Any], folder: Path) -> list[Path]:
    """One pass over the sample stage's candidates: each row that a block of pairs needs is
    written to that block's Arrow file in ``folder``. Returns the files, one per block."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    files = [folder / f"{index:06d}.arrow" for index in range(len(block_ids))]
    if not block_ids:
        return files
    every_id = pa.concat_arrays(block_ids)  # a group is in one pairs commit, so in one block
    block_of_group: Any = np.repeat(np.arange(len(block_ids)), [len(ids) for ids in block_ids])
    columns = ["group_id", "candidate", "image"]
    writers: dict[int, Any] = {}
    try:
        for part in store.iter_table_blocks("sample", "candidates", columns=columns, min_rows=1_000_000):
            found = pc.fill_null(pc.index_in(part.column("group_id"), value_set=every_id), -1).to_numpy()
            wanted = np.flatnonzero(found >= 0)
            owner = block_of_group[found[wanted]]
            order = np.argsort(owner, kind="stable")
            rows, owner = part.select(columns).take(wanted[order]), owner[order]
            cuts: Any = np.flatnonzero(np.diff(owner)) + 1
            for start, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(owner)], strict=True):
                index = int(owner[start])
                if index not in writers:
                    writers[index] = pa.ipc.new_file(str(files[index]), rows.schema)
                writers[index].write_table(rows.slice(start, stop - start))
    finally:
        for writer in writers.values():
            writer.close()
    for index, path in enumerate(files):
        if index not in writers:  # no candidate of this block's groups: an empty table
            empty = pa.schema([("group_id", pa.string()), ("candidate", pa.int32()), ("image", pa.string())])
            pa.ipc.new_file(str(path), empty).close()
    return files


def _candidate_images(bucket_file: Path, ids: Any, group_of_pair: Any, first: Any, second: Any) -> list[Any]:
    """The image paths of each pair's two candidates (column 0, column 1), from the
    block's candidates file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    with pa.memory_map(str(bucket_file)) as source:
        found = pa.ipc.open_file(source).read_all()
    most = pc.max(found.column("candidate")).as_py() if found.num_rows else 0
    span = int(max(first.max(), second.max(), most or 0)) + 1
    slot: Any = np.full(len(ids) * span, -1, dtype=np.int64)
    found_group = pc.index_in(found.column("group_id"), value_set=ids).to_numpy()
    slot[found_group * span + found.column("candidate").to_numpy()] = np.arange(found.num_rows)
    columns = []
    for candidate in (first, second):
        rows = slot[group_of_pair * span + candidate]
        if (rows < 0).any():
            at = int(np.flatnonzero(rows < 0)[0])
            group_id = ids[int(group_of_pair[at])].as_py()
            raise Dp2oError(
                f"candidate {int(candidate[at])} of group {group_id!r} has no image in the sample stage"
            )
        columns.append(found.column("image").take(rows))
    return columns


def swap_flags(
    group_ids: list[str],
    group_of_pair: Any,
    winner: Any,
    loser: Any,
    pool: Executor | None = None,
    cores: int = 1,
) -> Any:
    """Whether each pair's loser goes in column 0: bit 0 of
    ``derive_seed(0, "export", group_id, winner, loser)``; a group's pairs must be adjacent
    in ``group_of_pair``. With a process ``pool`` a large block is hashed in ``cores`` slices
    of whole groups, one in this process and the others in the pool's workers."""
    import numpy as np

    if len(winner) == 0:
        return np.zeros(0, dtype=bool)
    starts = [0, *(np.flatnonzero(np.diff(group_of_pair)) + 1).tolist()]
    heads = [_message_head(group_ids[group_of_pair[start]]) for start in starts]
    ends = [*starts[1:], len(winner)]
    slices = 1 if pool is None or len(winner) < PARALLEL_PAIRS else cores
    cuts = sorted(
        {0, len(starts), *(bisect.bisect_left(starts, len(winner) * k // slices) for k in range(1, slices))}
    )
    jobs = []  # whole groups a to b: their heads, ends relative to the job, winners, losers
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        first, stop = starts[a], ends[b - 1]
        jobs.append((heads[a:b], [e - first for e in ends[a:b]], winner[first:stop], loser[first:stop]))
    futures = [pool.submit(_digest_bytes, *job) for job in jobs[1:]] if pool is not None else []
    digests = [_digest_bytes(*jobs[0]), *(future.result() for future in futures)]
    # derive_seed keeps the first 8 digest bytes as a big-endian int shifted right by one:
    # its lowest bit is bit 1 of byte 7
    return (np.frombuffer(b"".join(digests), dtype=np.uint8) >> 1) & 1 == 1


def _message_head(group_id: str) -> bytes:
    """What ``derive_seed(0, "export", group_id, …)`` hashes before the winner and loser."""
    return ("\x1f".join(("0", "export", group_id)) + "\x1f").encode("utf-8")


def _digest_bytes(heads: list[bytes], ends: list[int], winner: Any, loser: Any) -> bytes:
    """Byte 7 of each pair's SHA-256: group k's pairs end at ``ends[k]`` (a pool's job)."""
    import hashlib

    sha256 = hashlib.sha256
    winners, losers = winner.tolist(), loser.tolist()
    loser_text = {value: b"%d" % value for value in set(losers)}
    out = bytearray(len(winners))
    start = 0
    for head, end in zip(heads, ends, strict=True):
        prefix = {w: head + b"%d\x1f" % w for w in set(winners[start:end])}
        out[start:end] = bytes(
            [
                sha256(prefix[w] + loser_text[lo]).digest()[7]
                for w, lo in zip(winners[start:end], losers[start:end], strict=True)
            ]
        )
        start = end
    return bytes(out)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (Linux)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _hash_pool(workers: int) -> Iterator[Executor | None]:
    """Worker processes for :func:`swap_flags` (none when ``workers`` is 0, or when this
    process's main module could not be imported again by a worker: a REPL, ``python -``).
    Spawned, not forked: the caller may hold threads (torch, arrow) that a fork would copy
    mid-lock."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    importable = getattr(main, "__spec__", None) is not None or (main_file and os.path.isfile(main_file))
    if workers <= 0 or not importable:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool
