"""What a plugin buys against what it costs: the metric against FLOPs, throughput and peak memory,
each plugin a point with its 95% interval, the Pareto front drawn through the plugins that no
other beats on both axes."""

import math
from pathlib import Path

from visionattn.attention import KINDS, get_attention
from visionattn.compare.leaderboard import Leaderboard, Row

# cost key -> axis label, whether more is better
AXES = {
    "flops": ("FLOPs an image (forward), M", False),
    "throughput": ("training throughput, images/s", True),
    "peak_memory_mb": ("peak training memory, MiB", False),
}
SCALE = {"flops": 1e-6}


def pareto_front(points: list[tuple[float, float]], more_is_better: bool) -> list[int]:
    """Indices of the points ``(cost, metric)`` that no other point dominates (a cost as good and
    a metric as high, one of them strictly), in the cost's order."""

    def better_or_equal(a: float, b: float) -> bool:
        return a >= b if more_is_better else a <= b

    front = []
    for i, (cost, metric) in enumerate(points):
        dominated = any(
            better_or_equal(c, cost) and m >= metric and (c != cost or m != metric)
            for j, (c, m) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot(board: Leaderboard, out: Path) -> list[Path]:
    """One PNG for each cost axis and each table; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    for values, rows in board.tables.items():
        rows = [r for r in rows if all(_finite(r.cost[k]) for k in AXES)]
        where = ", ".join(f"{k}={v}" for k, v in zip(board.by, values, strict=True))
        suffix = "_" + "_".join(_slug(v) for v in values) if values else ""
        for key, (label, more_is_better) in AXES.items():
            figure, axis = plt.subplots(figsize=(7.5, 5.5))
            _draw(axis, rows, key, more_is_better)
            axis.set_xlabel(f"{label} ({'more' if more_is_better else 'less'} is better)")
            axis.set_ylabel(f"{board.metric_name}, % (mean of seeds, 95% interval)")
            title = f"{board.metric_name} against {label.split(',')[0]}"
            axis.set_title(title + (f"\n{where}" if where else ""))
            axis.grid(True, alpha=0.3)
            figure.tight_layout()
            path = out / f"{board.metric_name}_vs_{key}{suffix}.png"
            figure.savefig(path, dpi=110)
            plt.close(figure)
            written.append(path)
    return written


def _draw(axis, rows: list[Row], key: str, more_is_better: bool) -> None:
    scale = SCALE.get(key, 1.0)
    colors = dict(zip(KINDS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    points = [(r.cost[key] * scale, 100 * r.summary.mean) for r in rows]
    for kind in (*KINDS, "baseline"):
        chosen = [(r, p) for r, p in zip(rows, points, strict=True) if _kind(r) == kind]
        if not chosen:
            continue
        xs, ys = [p[0] for _, p in chosen], [p[1] for _, p in chosen]
        errors = [
            [100 * (r.summary.mean - r.summary.low) if r.summary.n > 1 else 0.0 for r, _ in chosen],
            [
                100 * (r.summary.high - r.summary.mean) if r.summary.n > 1 else 0.0
                for r, _ in chosen
            ],
        ]
        axis.errorbar(
            xs, ys, yerr=errors, fmt="o", capsize=3, color=colors.get(kind, "black"), label=kind
        )
        for (row, _), x, y in zip(chosen, xs, ys, strict=True):
            axis.annotate(row.attn, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(points, more_is_better)
    axis.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        color="grey",
        linestyle="--",
        drawstyle="steps-post" if not more_is_better else "steps-pre",
        label="Pareto front",
    )
    values = [p[0] for p in points if p[0] > 0]
    if values and max(values) / min(values) > 20:
        axis.set_xscale("log")
    axis.legend(fontsize=8)


def _kind(row: Row) -> str:
    name = row.runs[0].attn
    if name == "none":
        return "baseline"
    try:
        return get_attention(name).kind
    except ValueError:  # a plugin this install does not have
        return "other"


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _slug(value: object) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(value))
