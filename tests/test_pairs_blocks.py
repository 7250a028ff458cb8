"""The streamed, vectorised pairs stage gives exactly what the per-group computation gives."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from dp2o_core.errors import Dp2oError
from dp2o_core.interfaces import PairSelector, Weighting
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.stages.pairs import import_scores, make_pairs
from dp2o_core.store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from per_group_pairs import compute_pairs  # noqa: E402  (the computation before vectorising)

METRICS = ("fsim", "vsi", "gmsd", "niqe", "piqe")


def random_scores(seed: int, groups: int = 60) -> pa.Table:
    """Scores with ties (few distinct values), constant metrics and two group sizes."""
    rng = np.random.default_rng(seed)
    rows = {"group_id": [], "candidate": [], **{m: [] for m in METRICS}}
    for g in range(groups):
        m = 16 if g % 5 else 12
        for candidate in rng.permutation(m):  # rows not in candidate order
            rows["group_id"].append(f"g{(g * 7919) % 1000:03d}/img {g}")
            rows["candidate"].append(int(candidate))
            for k, metric in enumerate(METRICS):
                constant = (g + k) % 9 == 0
                rows[metric].append(float(k) if constant else float(rng.integers(0, 4)) / 3)
    order = rng.permutation(len(rows["group_id"]))  # groups interleaved in the file
    return pa.table({k: pa.array([v[i] for i in order]) for k, v in rows.items()})


class PerGroupSelector(PairSelector):
    """The ratio selector seen through the per-group method only (a third-party plugin)."""

    name = "per-group-ratio"

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def select(self, rewards):
        return self.inner.select(rewards)


class PerGroupWeighting(Weighting):
    """A weighting with only ``weigh`` (the fallback path)."""

    name = "per-group-weighting"

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def weigh(self, groups):
        return self.inner.weigh(groups)


def _build(kind, spec):
    return resolve_spec(PluginManager(), kind, spec).build()


def _rows(store: RunStore, table: str, keys):
    rows = store.read_table("pairs", table).to_pylist()
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


@pytest.mark.parametrize(
    ("selector", "weighting", "per_group_plugins"),
    [
        ("ratio:ratio=0.25", "hierarchical", False),
        ("ratio:ratio=0.0625", "hierarchical", False),
        ("best-worst", "hierarchical:intra=false", False),
        ("ratio:n=3", "hierarchical:inter=false", False),
        ("ratio:ratio=0.25", "uniform", False),
        ("ratio:ratio=0.25", "hierarchical", True),
    ],
)
def test_streamed_pairs_equal_the_per_group_computation(
    tmp_path, monkeypatch, selector, weighting, per_group_plugins
):
    from dp2o_core.stages import pairs as pairs_stage

    monkeypatch.setattr(pairs_stage, "PAIRS_PER_COMMIT", 37)  # blocks split over several commits
    scores = tmp_path / "scores.parquet"
    pq.write_table(random_scores(zlib.crc32(f"{selector} {weighting}".encode()) % 1000), scores)
    store = RunStore(tmp_path / "run")
    import_scores(store, scores, rows_per_part=150)  # several commits, so several blocks
    reward = _build("reward", "hybrid-offline")
    chosen, weigh = _build("selector", selector), _build("weighting", weighting)
    expected = compute_pairs(pq.read_table(scores), reward, chosen, weigh)
    if per_group_plugins:
        chosen, weigh = PerGroupSelector(chosen), PerGroupWeighting(weigh)
    result = make_pairs(store, reward, chosen, weigh, {"test": selector}, block_rows=100)  # many blocks
    assert len(store.commits("pairs")) > 3

    want_rewards = sorted(
        ({"group_id": g, **row} for g, rows in expected.rewards.items() for row in rows),
        key=lambda r: (r["group_id"], r["candidate"]),
    )
    assert _rows(store, "rewards", ("group_id", "candidate")) == want_rewards  # bit for bit
    want_pairs = sorted(
        ({"group_id": g, **row} for g, rows in expected.pairs.items() for row in rows),
        key=lambda r: (r["group_id"], r["winner"], r["loser"]),
    )
    assert _rows(store, "pairs", ("group_id", "winner", "loser")) == want_pairs
    assert result.summary.pairs == expected.summary.pairs and result.summary.groups == expected.summary.groups
    assert result.summary.weight_mean == pytest.approx(expected.summary.weight_mean, rel=1e-12)
    assert result.summary.gap_max == expected.summary.gap_max


def test_bad_scores_are_named_and_leave_the_run_as_it_was(tmp_path):
    table = random_scores(3, groups=6)
    pq.write_table(table, tmp_path / "good.parquet")
    store = RunStore(tmp_path / "run")
    import_scores(store, tmp_path / "good.parquet")
    before = store.record("score")["fingerprint"]
    values = table.column("niqe").to_pylist()
    values[7] = float("nan")
    bad = table.set_column(table.column_names.index("niqe"), "niqe", pa.array(values))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(
        Dp2oError, match=r"rejected \(the run is unchanged\).*non-finite 'niqe' score \(nan\)"
    ):
        import_scores(store, tmp_path / "bad.parquet")
    # the run's own scores are still the stage, done, and nothing of the import is left behind
    assert store.status("score").state == "done" and store.record("score")["fingerprint"] == before
    assert store.read_table("score", "scores").num_rows == table.num_rows
    assert not list(store.root.glob(".import-*")) and not list(store.root.glob(".trash-*"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("inf", r"non-finite 'niqe' score \(inf\)"),
        ("duplicate", r"lists a candidate index twice"),
        ("single", r"has 1 candidate; pairs need at least two"),
        ("text", r"column 'niqe' must hold a number"),
        ("negative", r"candidate index -1 of group .* is negative"),
        ("no-metrics", r"no metric columns"),
    ],
)
def test_every_rejected_import_names_the_problem_and_keeps_the_runs_scores(tmp_path, change, message):
    table = random_scores(5, groups=4)
    pq.write_table(table, tmp_path / "good.parquet")
    store = RunStore(tmp_path / "run")
    import_scores(store, tmp_path / "good.parquet")
    rows = table.to_pylist()
    if change == "inf":
        rows[2]["niqe"] = float("inf")
    elif change == "duplicate":
        rows[1]["candidate"] = rows[0]["candidate"]
    elif change == "single":
        first = rows[0]["group_id"]
        rows = [r for r in rows if r["group_id"] != first] + [rows[0]]
    elif change == "text":
        rows[3]["niqe"] = "abc"
    elif change == "negative":
        rows[0]["candidate"] = -1
    elif change == "no-metrics":
        rows = [{"group_id": r["group_id"], "candidate": r["candidate"]} for r in rows]
    path = tmp_path / "bad.csv"
    pa.csv.write_csv(pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in rows]), path)
    with pytest.raises(Dp2oError, match=message):
        import_scores(store, path)
    assert store.status("score").state == "done"
    assert store.read_table("score", "scores").num_rows == table.num_rows


def test_report_statistics_read_in_blocks_match_the_whole_tables(tmp_path):
    from dp2o_core.report.facts import pair_facts

    pq.write_table(random_scores(11), tmp_path / "scores.parquet")
    store = RunStore(tmp_path / "run")
    import_scores(store, tmp_path / "scores.parquet", rows_per_part=150)
    make_pairs(
        store, _build("reward", "hybrid-offline"), _build("selector", "ratio:ratio=0.25"),
        _build("weighting", "hierarchical"), {}, block_rows=100,
    )  # fmt: skip
    facts = pair_facts(store, limit=50)
    rewards = store.read_table("pairs", "rewards").column("reward").to_numpy()
    pairs = store.read_table("pairs", "pairs")
    weights = pairs.column("weight").to_numpy()
    gaps = pairs.column("winner_reward").to_numpy() - pairs.column("loser_reward").to_numpy()
    assert facts.pairs == len(weights) and facts.groups == 60 and facts.sampled
    for got, values in ((facts.rewards, rewards), (facts.weights, weights), (facts.gaps, gaps)):
        assert got.count == len(values) and got.min == values.min() and got.max == values.max()
        assert got.mean == pytest.approx(values.mean(), rel=1e-12)
        assert got.std == pytest.approx(values.std(), rel=1e-9)
    assert 40 <= len(facts.weight_sample) <= 50 and set(facts.weight_sample) <= set(weights.tolist())
    assert 40 <= len(facts.reward_sample) <= 50
