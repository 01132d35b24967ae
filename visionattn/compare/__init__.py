"""Runs side by side: seed statistics, a leaderboard and Pareto plots of what each plugin costs
against what it buys (``visionattn-compare``, ``python -m visionattn.compare``)."""

from visionattn.compare.leaderboard import CompareError, Leaderboard, build, collect, tabulate
from visionattn.compare.runs import Run, RunError, find_runs, read_run
from visionattn.compare.stats import Difference, Summary, difference, summarize

__all__ = [
    "CompareError",
    "Difference",
    "Leaderboard",
    "Run",
    "RunError",
    "Summary",
    "build",
    "collect",
    "difference",
    "find_runs",
    "read_run",
    "summarize",
    "tabulate",
]
