"""Runs side by side: one row a plugin, its seeds' mean with a 95% interval, its difference from
``attn=none`` with a test of it, and its cost card.

Runs enter one table only when they share a recipe: everything but the plugin, its knobs, the
seed and the keys of ``--by``, each of which becomes a column (one table a value).
"""

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from visionattn.compare.runs import NOT_RECIPE, Run, RunError, find_runs, read_run
from visionattn.compare.stats import Difference, Summary, difference, summarize

BASELINE = "none"
COST = ("params", "flops", "throughput", "peak_memory_mb")
COLUMNS = (
    "attn", "n", "mean", "std", "ci_low", "ci_high",
    "diff", "diff_low", "diff_high", "p", "test", "significant",
    *COST,
)  # fmt: skip


class CompareError(ValueError):
    """Runs that cannot be put in one table: the message names what differs and the fix."""


@dataclasses.dataclass
class Row:
    attn: str
    by: dict[str, Any]  # the --by keys' values, shared by the row's runs
    runs: list[Run]
    summary: Summary  # of the runs' metric
    diff: Difference | None  # against the baseline of the same by-values; None for it or none
    cost: dict[str, float]  # each figure's mean over the runs

    def record(self) -> dict[str, Any]:
        """The row as leaderboard.csv writes it: the metric as the runs logged it (a fraction)."""
        s, d = self.summary, self.diff
        nan = math.nan
        return {
            **self.by,
            "attn": self.attn,
            "n": s.n,
            "mean": s.mean,
            "std": s.std,
            "ci_low": s.low,
            "ci_high": s.high,
            "diff": d.diff if d else nan,
            "diff_low": d.low if d else nan,
            "diff_high": d.high if d else nan,
            "p": d.p if d else nan,
            "test": d.test if d else "",
            "significant": d.significant if d and d.test else "",
            **self.cost,
        }


@dataclasses.dataclass
class Leaderboard:
    metric: str  # the monitored metric, e.g. "val/acc1"
    by: list[str]
    rows: list[Row]  # by-values in order, then best mean first
    recipe: dict[str, Any]  # what every run shares (config keys and Hydra choices)
    skipped: list[str]  # one line a path that was not averaged, and why
    notes: list[str]  # what was decided on the way (a duplicate seed, a missing baseline)

    @property
    def tables(self) -> dict[tuple, list[Row]]:
        """Rows by their by-values, in order."""
        tables = defaultdict(list)
        for row in self.rows:
            tables[tuple(row.by.values())].append(row)
        return dict(tables)

    @property
    def metric_name(self) -> str:
        return self.metric.rsplit("/", 1)[-1]


def collect(paths: Iterable[str | Path]) -> tuple[list[Run], list[str]]:
    """Every finished run at or below ``paths`` and one line for each path that gave none:
    a directory without a run, a run that cannot be read, a run still going or failed."""
    runs, skipped = [], []
    for path in paths:
        try:
            found = list(find_runs([path]))
        except RunError as e:
            skipped.append(str(e))
            continue
        for run_dir in found:
            try:
                run = read_run(run_dir)
            except RunError as e:
                skipped.append(str(e))
                continue
            if run.finished:
                runs.append(run)
            else:
                skipped.append(
                    f"{run_dir}: not finished ({run.epochs} of {run.max_epochs} epochs "
                    "validated; still going, or failed: see its train.log)"
                )
    return runs, skipped


def build(paths: Sequence[str | Path], by: Sequence[str] = ()) -> Leaderboard:
    """The leaderboard of the finished runs at or below ``paths``."""
    return tabulate(*collect(paths), by=by)


def tabulate(runs: list[Run], skipped: list[str], by: Sequence[str] = ()) -> Leaderboard:
    """The leaderboard of finished ``runs``. Raises :class:`CompareError` when there is none, or
    when they differ in more than the plugin, the seed and the keys of ``by``."""
    if not runs:
        raise CompareError("no finished run to compare")
    by_values = [_by_values(run, by) for run in runs]
    recipe = _shared_recipe(runs, by)
    notes = []
    groups: dict[tuple, dict[int, Run]] = defaultdict(dict)  # (by-values, label) -> seed -> run
    labels = _labels(runs)
    for run, values, label in zip(runs, by_values, labels, strict=True):
        seeds = groups[(tuple(values.items()), label)]
        older = seeds.get(run.seed)
        if older is not None:
            kept, dropped = sorted((older, run), key=_finished_time, reverse=True)
            notes.append(
                f"{label} seed {run.seed} ran twice: kept {kept.path} (newer), "
                f"left out {dropped.path}"
            )
            run = kept
        seeds[run.seed] = run
    metric = runs[0].metric

    rows = []
    for (values, label), seeds in groups.items():
        ordered = [seeds[s] for s in sorted(seeds)]
        rows.append(
            Row(
                attn=label,
                by=dict(values),
                runs=ordered,
                summary=summarize([r.value for r in ordered]),
                diff=None,
                cost={k: _mean([r.cost[k] for r in ordered]) for k in COST},
            )
        )
    for values in {tuple(r.by.items()) for r in rows}:
        table = [r for r in rows if tuple(r.by.items()) == values]
        baseline = [r for r in table if r.attn == BASELINE]
        if not baseline:
            where = ", ".join(f"{k}={v}" for k, v in values)
            notes.append(
                f"no attn={BASELINE} run{' for ' + where if where else ''}: no differences "
                f"(add attn={BASELINE} to the sweep)"
            )
            continue
        reference = {r.seed: r.value for r in baseline[0].runs}
        for row in table:
            if row is not baseline[0]:
                row.diff = difference({r.seed: r.value for r in row.runs}, reference)
    rows.sort(key=lambda r: (_sort_key(r.by), -r.summary.mean))
    return Leaderboard(metric, list(by), rows, recipe, skipped, notes)


def _by_values(run: Run, by: Sequence[str]) -> dict[str, Any]:
    values = {}
    for key in by:
        try:
            values[key] = run.group(key)
        except KeyError:
            raise CompareError(
                f"--by {key}: {run.path} has no such config key or Hydra group (a group such as "
                "model or data, or a key such as data.batch_size)"
            ) from None
    return values


def _shared_recipe(runs: list[Run], by: Sequence[str]) -> dict[str, Any]:
    """What every run shares; raises :class:`CompareError` naming the keys in which they differ."""

    def recipe(run: Run) -> dict[str, Any]:
        # A --by group stands for the config keys under it: data=shapes_hard sets data.*.
        own = {k: v for k, v in run.recipe.items() if not _under(k, by)}
        own |= {f"{k}=": v for k, v in run.choices.items() if not _under(k, (*by, *NOT_RECIPE))}
        return own

    metrics = sorted({run.metric for run in runs})
    if len(metrics) > 1:
        raise CompareError(
            f"these runs monitor different metrics ({' vs '.join(metrics)}): compare the runs "
            "of each task on their own"
        )
    recipes = [recipe(run) for run in runs]
    keys = sorted(set().union(*recipes))
    missing = object()
    differ = [k for k in keys if len({repr(r.get(k, missing)) for r in recipes}) > 1]
    if differ:
        # Hydra's choices first: data=shapes vs data=shapes_hard says more than data.scene does.
        differ.sort(key=lambda k: not k.endswith("="))
        shown = []
        for key in differ[:8]:
            seen = sorted({_plain(r.get(key, "(unset)")) for r in recipes})
            name = key.removesuffix("=")
            shown.append(f"{name} ({' vs '.join(seen[:3])}{', ...' if len(seen) > 3 else ''})")
        more = f" and {len(differ) - 8} more" if len(differ) > 8 else ""
        groups = [k.removesuffix("=") for k in differ if k.endswith("=")]
        keys = [k for k in differ if not k.endswith("=") and not _under(k, groups)]
        columns = groups + keys[:3]
        raise CompareError(
            "these runs differ in more than attn and seed, so they are not one table: "
            + "; ".join(shown)
            + more
            + ". Compare one recipe at a time, or make the difference a column with "
            + " ".join(f"--by {c}" for c in columns)
        )
    return recipes[0]


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _labels(runs: list[Run]) -> list[str]:
    """A plugin's name, with the knobs that differ among the runs of that name:
    ``se(reduction=8)`` beside ``se(reduction=16)``."""
    knobs = defaultdict(lambda: defaultdict(set))
    for run in runs:
        for key, value in _attn_knobs(run).items():
            knobs[run.attn][key].add(repr(value))
    labels = []
    for run in runs:
        own = _attn_knobs(run)
        varying = [k for k, seen in knobs[run.attn].items() if len(seen) > 1]
        shown = ",".join(f"{k}={_plain(own.get(k))}" for k in sorted(varying))
        labels.append(f"{run.attn}({shown})" if shown else run.attn)
    return labels


def _attn_knobs(run: Run) -> dict[str, Any]:
    return {k[5:]: v for k, v in run.config.items() if k.startswith("attn.") and k != "attn.name"}


def _plain(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _finished_time(run: Run) -> float:
    logs = list((run.path / "csv").glob("version_*/metrics.csv"))
    return max(p.stat().st_mtime for p in logs)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sort_key(values: dict[str, Any]) -> tuple:
    # numbers in their order (batch sizes 32 < 128), anything else by its text
    return tuple(
        (0, v, "") if isinstance(v, int | float) else (1, 0, _plain(v)) for v in values.values()
    )
