"""The RewardModel interface: raw per-metric scores and the group-relative reward."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class MetricInfo:
    """A raw metric a reward needs scored and stored.

    ``name`` is the column of the scores table (the pyiqa name for pyiqa metrics);
    ``mode`` says whether the HR reference is needed; ``lower_better`` gives the direction,
    taken from the metric itself, never from a hard-coded list.
    """

    name: str
    mode: Literal["FR", "NR"]
    lower_better: bool
    version: str = ""
    #: the smallest height and width (pixels) the metric can score; the preflight checks the
    #: candidates' size against it before any sampling (not part of the score fingerprint)
    min_size: int = 1


class RewardModel(Implementation):
    """Scores candidates and turns raw scores into one reward per candidate.

    Two steps, so that rewards can be recombined without rescoring:

    * :meth:`score` computes raw scores for the metrics of :meth:`metrics` on the
      candidates of one group (and its HR reference for full-reference metrics). The run
      store keeps them in the scores table, one column per metric name.
    * :meth:`reward` turns one group's raw scores into rewards, higher is better. It may
      be relative to the group (the hybrid reward of docs/method.md §2 is).

    A composite reward (``hybrid``) lists the metrics of its members and leaves scoring
    to them. Example of a single-metric reward::

        from dp2o_core import MetricInfo, RewardModel, hookimpl

        class BrightnessReward(RewardModel):
            \"\"\"Prefers brighter candidates (mean pixel value).\"\"\"

            name = "brightness"

            def metrics(self):
                return [MetricInfo("brightness", mode="NR", lower_better=False)]

            def score(self, candidates, reference=None):
                return {"brightness": candidates.mean(dim=(1, 2, 3)).tolist()}

            def reward(self, scores):
                return scores["brightness"]

        @hookimpl
        def register_rewards(register):
            register(BrightnessReward)
    """

    kind: ClassVar[str] = "reward"

    @abstractmethod
    def metrics(self) -> Sequence[MetricInfo]:
        """The raw metrics this reward needs, as columns of the scores table."""

    def score(
        self, candidates: torch.Tensor, reference: torch.Tensor | None = None
    ) -> Mapping[str, Sequence[float]]:
        """Raw scores of ``candidates`` (N×3×H×W, RGB in [0, 1]) for each metric.

        ``reference`` is the group's HR image (1×3×H×W), given when any metric is
        full-reference. Composite rewards need not implement this: their members score.
        """
        raise NotImplementedError(f"reward {self.name!r} does not score images itself")

    def prepare(self) -> None:
        """Load what scoring needs (weights, networks) now rather than at the first score.

        Raises :class:`~dp2o_core.errors.Dp2oError` naming what is missing and how to
        provide it; ``dp2o eval`` uses this to list metrics that cannot run. The default
        does nothing.
        """

    @abstractmethod
    def reward(self, scores: Mapping[str, Sequence[float]]) -> Sequence[float] | np.ndarray:
        """One group's rewards (higher is better) from its raw scores, keyed by metric name."""

    def reward_block(self, scores: Mapping[str, np.ndarray], offsets: np.ndarray) -> np.ndarray:
        """The rewards of many groups at once (the pairs stage calls this).

        ``scores`` maps each metric to one float64 array of every candidate of every group,
        group g at ``[offsets[g]:offsets[g + 1]]`` (see :mod:`dp2o_core.segments`). The
        default calls :meth:`reward` once per group; override it with array operations
        when a data set has many groups (30,000 groups × 64 candidates in the paper), and
        keep the results equal to :meth:`reward`'s.
        """
        import numpy as np

        out: np.ndarray = np.empty(int(offsets[-1]), dtype=np.float64)
        for start, end in zip(offsets[:-1], offsets[1:], strict=True):
            group = {name: values[start:end].tolist() for name, values in scores.items()}
            rewards = np.asarray(self.reward(group), dtype=np.float64)
            if rewards.shape != (end - start,):
                raise ValueError(
                    f"reward {self.name!r} returned {rewards.shape} rewards for a group of {end - start}"
                )
            out[start:end] = rewards
        return out

    def reward_parts(self, scores: Mapping[str, Sequence[float]]) -> Mapping[str, Sequence[float]]:
        """Named parts the reward of one group is made of, per candidate (the hybrid reward's
        FR and NR halves); evaluation reports each part beside the reward. None by default."""
        return {}
