"""The leaderboard as files: ``leaderboard.csv`` with every figure as the runs logged it, and
``leaderboard.md`` to read, the metric in percent."""

import csv
import math
from pathlib import Path
from typing import Any

from visionattn.compare.leaderboard import BASELINE, COLUMNS, Leaderboard, Row
from visionattn.report import si


def write_csv(board: Leaderboard, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*board.by, "metric", *COLUMNS])
        writer.writeheader()
        for row in board.rows:
            writer.writerow({"metric": board.metric, **row.record()})


def markdown(board: Leaderboard) -> str:
    """The tables, one for each value of the ``--by`` keys, with the recipe they share and the
    runs that were left out."""
    name = board.metric_name
    lines = [f"# {board.metric} by attention plugin", ""]
    shared = {
        k.removesuffix("="): v
        for k, v in board.recipe.items()
        if k.endswith("=") and v not in (None, "None")
    }
    if "trainer.max_epochs" in board.recipe:
        shared["epochs"] = board.recipe["trainer.max_epochs"]
    if shared:
        lines += ["Shared by every run: " + ", ".join(f"{k}={v}" for k, v in shared.items()), ""]
    lines += [
        f"mean and std of {name} over seeds, in percent; the interval is the 95% t interval of "
        f"the mean. diff is the mean minus attn={BASELINE}'s, with its 95% interval and the p "
        "value of the named test (paired by seed where both ran the same seeds, Welch's "
        "otherwise); significant means p < 0.05. Costs are means over the seeds' last epochs.",
        "",
    ]
    header = ["attn", "n", "mean", "std", "95% interval", "diff", "diff 95% interval", "p",
              "test", "significant", "params", "FLOPs", "throughput (img/s)",
              "peak memory (MiB)"]  # fmt: skip
    for values, rows in board.tables.items():
        if values:
            lines += ["## " + ", ".join(f"{k}={v}" for k, v in zip(board.by, values, strict=True))]
            lines.append("")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
        lines.append("")
    if board.notes:
        lines += ["Notes:", "", *[f"- {n}" for n in board.notes], ""]
    if board.skipped:
        lines += ["Left out:", "", *[f"- {s}" for s in board.skipped], ""]
    return "\n".join(lines)


def _cells(row: Row) -> list[str]:
    r = row.record()
    return [
        row.attn,
        str(r["n"]),
        _pct(r["mean"]),
        _pct(r["std"]),
        _interval(r["ci_low"], r["ci_high"]),
        _pct(r["diff"], signed=True),
        _interval(r["diff_low"], r["diff_high"], signed=True),
        _fixed(r["p"], 3),
        r["test"] or "-",
        {True: "yes", False: "no"}.get(r["significant"], "-"),
        "-" if _missing(r["params"]) else si(r["params"]),
        "-" if _missing(r["flops"]) else si(r["flops"]),
        _fixed(r["throughput"], 0),
        _fixed(r["peak_memory_mb"], 0),
    ]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value: float, signed: bool = False) -> str:
    return "-" if _missing(value) else f"{100 * value:{'+' if signed else ''}.2f}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    if _missing(low):
        return "-"
    return f"[{_pct(low, signed)}, {_pct(high, signed)}]"


def _fixed(value: float, digits: int) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f}"
