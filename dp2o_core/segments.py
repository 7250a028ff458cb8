"""Per-group operations on flat arrays: the vectorised form of rewards, pairs and weights.

A block of groups is stored flat: the values of every candidate of every group in one
array, group g occupying ``values[offsets[g]:offsets[g + 1]]`` (``offsets`` has one entry
more than there are groups). These helpers reduce, expand and rank within groups without
a Python loop per group; where a reduction sums, it adds left to right like a plain loop,
so a vectorised plugin gives the same floating-point results as its per-group form.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def group_sizes(offsets: np.ndarray) -> np.ndarray:
    """The number of values of each group."""
    return np.diff(np.asarray(offsets, dtype=np.int64))


def expand(per_group: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One value per group repeated for each of the group's values."""
    return np.repeat(per_group, group_sizes(offsets))


def segment_min(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The smallest value of each (non-empty) group."""
    return np.minimum.reduceat(values, np.asarray(offsets[:-1], dtype=np.int64))


def segment_max(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The largest value of each (non-empty) group."""
    return np.maximum.reduceat(values, np.asarray(offsets[:-1], dtype=np.int64))


def by_size(offsets: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(size, indices of the groups of that size) for every group size in the block.

    Groups of one size form a rectangle (groups × size) that numpy handles in one call;
    a data set usually has a single size (M candidates everywhere).
    """
    sizes = group_sizes(offsets)
    for size in np.unique(sizes):
        yield int(size), np.flatnonzero(sizes == size)


def rows_of(groups: np.ndarray, size: int, offsets: np.ndarray) -> np.ndarray:
    """Flat indices of the values of ``groups`` (all of ``size`` values), as groups × size."""
    return np.asarray(offsets[groups], dtype=np.int64)[:, None] + np.arange(size)


def sequential_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The sum of each group's values, added left to right (as ``total += v`` in a loop)."""
    sums: np.ndarray = np.zeros(len(offsets) - 1, dtype=np.float64)
    for size, groups in by_size(offsets):
        if size:
            sums[groups] = np.cumsum(values[rows_of(groups, size, offsets)], axis=1)[:, -1]
    return sums


def sequential_total(values: np.ndarray) -> float:
    """The sum of all ``values`` added left to right."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


def descending_order(values: np.ndarray, groups: np.ndarray, size: int, offsets: np.ndarray) -> np.ndarray:
    """For ``groups`` of ``size`` values: positions within each group by value descending,
    ties by position ascending (a stable sort of the negated values)."""
    block: Any = values[rows_of(groups, size, offsets)]
    return np.argsort(-block, axis=1, kind="stable")


def left_to_right(values: Iterable[float]) -> float:
    """The sum of ``values`` added in order (Python 3.12's ``sum`` compensates rounding;
    this matches the vectorised path's sums on every Python)."""
    total = 0.0
    for value in values:
        total += value
    return total
