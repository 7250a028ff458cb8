"""Whether a difference between two evaluated models is real: paired statistics over inputs.

Every model of an evaluation samples the same seeds for the same inputs, so each input
gives one paired observation per quantity (a metric's Mean@M, the reward's Best/Mean/Worst@M,
a part of the reward). The spread that matters is the one between inputs — one photograph
gains, another loses — not between the M samples of one input, so the statistics here are
computed on per-input values: the mean difference d̄ with its standard error s_d/√n, the
paired t-test (t = d̄ / SE with n − 1 degrees of freedom), the Wilcoxon signed-rank test (no
assumption that the differences are normal; exact for small n without ties, zero differences
dropped) and how many inputs got better and worse, with the metric's direction. Both
p-values are two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PairedComparison:
    """One quantity of one model against the base model, over the n inputs both evaluated."""

    n: int
    #: mean over inputs of (model − base)
    mean_difference: float
    #: standard error of that mean: the differences' sample standard deviation / √n
    standard_error: float
    #: two-sided p-value of the paired t-test (1.0 when every difference is 0; NaN — undefined —
    #: with fewer than two inputs)
    t_p_value: float
    #: two-sided p-value of the Wilcoxon signed-rank test (1.0 when every difference is 0; NaN
    #: with fewer than two inputs)
    wilcoxon_p_value: float
    #: inputs on which the model is better / worse than the base (the metric's direction)
    better: int
    worse: int

    @classmethod
    def of(
        cls, base: Sequence[float], model: Sequence[float], *, lower_better: bool = False
    ) -> PairedComparison:
        """The comparison of per-input values ``model`` against ``base`` (same input order)."""
        if len(base) != len(model):
            raise ValueError(f"{len(base)} base values against {len(model)} model values")
        differences = [float(m) - float(b) for b, m in zip(base, model, strict=True)]
        n = len(differences)
        mean = sum(differences) / n if n else math.nan
        se = standard_error(differences)
        sign = -1 if lower_better else 1
        return cls(
            n=n,
            mean_difference=mean,
            standard_error=se,
            t_p_value=paired_t_p_value(differences),
            wilcoxon_p_value=wilcoxon_p_value(differences),
            better=sum(1 for d in differences if sign * d > 0),
            worse=sum(1 for d in differences if sign * d < 0),
        )

    def as_record(self) -> dict[str, Any]:
        """JSON-ready form; an undefined (NaN) figure is null, so the file stays strict JSON."""
        return {key: None if _undefined(value) else value for key, value in asdict(self).items()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PairedComparison:
        """Rebuild from :meth:`as_record`'s output (null back to NaN)."""
        values: dict[str, Any] = {
            key: math.nan if record[key] is None else record[key] for key in cls.__dataclass_fields__
        }
        return cls(**values)


def _undefined(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (n − 1 in the denominator; 0 with fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean: sample standard deviation / √n (0 with fewer than two values)."""
    return sample_std(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def paired_t_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t-test of ``differences`` against 0."""
    n = len(differences)
    if n < 2:
        return math.nan  # no test from one input
    if all(d == 0 for d in differences):
        return 1.0
    se = standard_error(differences)
    mean = sum(differences) / n
    if se == 0:  # all equal and non-zero: as significant as it gets
        return 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean / se), n - 1))


def wilcoxon_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test (zero differences dropped; NaN, undefined,
    with fewer than two inputs)."""
    if len(differences) < 2:
        return math.nan
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def format_p(p: float | None) -> str:
    """A p-value as tables show it: two significant digits, '<0.001' below that, '-' when
    undefined (NaN, or null in a record)."""
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.2g}"
