"""Seed statistics: a group's mean with its 95% interval, and a plugin's difference from the
baseline with a test of it (paired by seed where both ran the same seeds, Welch's otherwise)."""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof 1); nan for one seed
    low: float  # the 95% t interval of the mean; nan for one seed
    high: float


@dataclasses.dataclass(frozen=True)
class Difference:
    diff: float  # mean of the plugin minus mean of the baseline
    low: float
    high: float
    p: float
    test: str  # "paired t" or "Welch t"; "" where no test can be made

    @property
    def significant(self) -> bool:
        return self.p < 1 - CONFIDENCE


def summarize(values: Sequence[float]) -> Summary:
    x = np.asarray(values, dtype=np.float64)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def difference(plugin: Mapping[int, float], baseline: Mapping[int, float]) -> Difference:
    """``plugin`` minus ``baseline``, each a seed -> metric map. Runs of one seed share their
    initial weights' draw and batch order, so where both groups ran the same seeds (two or more)
    the test is paired on the per-seed differences; otherwise Welch's unequal-variance t test."""
    a, b = np.array(list(plugin.values())), np.array(list(baseline.values()))
    diff = float(a.mean() - b.mean())
    if plugin.keys() == baseline.keys() and len(plugin) >= 2:
        d = np.array([plugin[s] - baseline[s] for s in sorted(plugin)])
        return _t_result(diff, d.std(ddof=1) / math.sqrt(len(d)), len(d) - 1, "paired t")
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, math.nan, math.nan, math.nan, "")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(math.sqrt(va + vb))
    # Welch-Satterthwaite degrees of freedom
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else math.inf
    return _t_result(diff, se, dof, "Welch t")


def _t_result(diff: float, se: float, dof: float, test: str) -> Difference:
    if se == 0:  # identical differences: no spread to test against
        p = 1.0 if diff == 0 else 0.0
        return Difference(diff, diff, diff, p, test)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, dof) * se)
    p = float(2 * stats.t.sf(abs(diff) / se, dof))
    return Difference(diff, diff - half, diff + half, p, test)
