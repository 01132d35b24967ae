"""Log-log plots of each plugin's latency and peak memory against the number of positions: a
slope of 1 is linear in N (gates, criss-cross, linear attention), 2 quadratic (full attention)."""

from pathlib import Path

from visionattn.attention import KINDS


def complexity_plot(rows: list[dict], channels: int, path: Path) -> None:
    """Forward+backward latency and peak memory of the plugins at ``channels`` channels, one row
    of panels per plugin kind, with dashed O(N) and O(N^2) guides."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["channels"] == channels and r.get("train_ms") is not None]
    figure, axes = plt.subplots(len(KINDS), 2, figsize=(12, 4.2 * len(KINDS)), squeeze=False)
    for kind, (time_axis, memory_axis) in zip(KINDS, axes, strict=True):
        plugins = list(dict.fromkeys(r["plugin"] for r in rows if r["kind"] == kind))
        for index, plugin in enumerate(plugins):
            points = sorted((r["positions"], r) for r in rows if r["plugin"] == plugin)
            positions = [n for n, _ in points]
            style = {"marker": "o", "linestyle": ("-", "--", ":", "-.")[index // 10 % 4]}
            time_axis.plot(positions, [r["train_ms"] for _, r in points], label=plugin, **style)
            memory_axis.plot(positions, [r["train_peak_mib"] for _, r in points], **style)
        for axis, key, unit in (
            (time_axis, "train_ms", "forward+backward, ms"),
            (memory_axis, "train_peak_mib", "peak memory, MiB"),
        ):
            figures = [r[key] for r in rows if r["kind"] == kind and r[key] > 0]
            if figures:
                _guides(axis, sorted({r["positions"] for r in rows}), min(figures))
            axis.set(xscale="log", yscale="log", xlabel="positions N = H x W", ylabel=unit)
            axis.set_title(f"{kind} plugins, C={channels}: {unit}")
            axis.grid(True, which="both", alpha=0.3)
        if plugins:
            time_axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _guides(axis, positions: list[int], start: float) -> None:
    first = positions[0]
    for power, label in ((1, "O(N)"), (2, "O(N^2)")):
        axis.plot(
            positions,
            [start * (n / first) ** power for n in positions],
            color="grey",
            linestyle=(0, (4, 4)),
            linewidth=0.8,
        )
        axis.annotate(
            label, (positions[-1], start * (positions[-1] / first) ** power), color="grey"
        )
