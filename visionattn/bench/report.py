"""The benchmark's output folder: a CSV per table, PNG plots, and ``report.md`` with the machine,
the command, the targets and every table."""

import datetime
from pathlib import Path

import torch

from visionattn.bench import targets as targets_
from visionattn.bench.classes import TOLERANCE, class_rows
from visionattn.bench.plots import complexity_plot
from visionattn.bench.tables import machine, markdown_table, pivot, write_csv

COLUMNS = {
    "models": {
        "model": "model",
        "attn": "attn",
        "params": "params",
        "gflops": "GFLOPs",
        "train_img_s": "train img/s",
        "infer_img_s": "inference img/s",
        "train_peak_mib": "train peak MiB",
        "infer_peak_mib": "inference peak MiB",
        "note": "note",
    },
    "model_peers": {
        "architecture": "architecture",
        "library": "build",
        "params": "params",
        "train_img_s": "train img/s",
        "train_ratio": "ours / this (train)",
        "infer_img_s": "inference img/s",
        "infer_ratio": "ours / this (inference)",
    },
    "plugin_peers": {
        "plugin": "plugin",
        "library": "module",
        "shape": "input",
        "params": "params",
        "forward_ms": "forward ms",
        "train_ms": "fwd+bwd ms",
        "train_ratio": "ours / timm",
        "train_peak_mib": "fwd+bwd peak MiB",
        "note": "how matched",
    },
    "attention": {
        "plugin": "plugin",
        "shape": "input",
        "settings": "settings",
        "gflops": "GFLOPs",
        "fused_train_ms": "fused fwd+bwd ms",
        "explicit_train_ms": "explicit fwd+bwd ms",
        "fused_train_peak_mib": "fused peak MiB",
        "explicit_train_peak_mib": "explicit peak MiB",
        "fused_train_rss_mib": "fused VmHWM growth MiB",
        "explicit_train_rss_mib": "explicit VmHWM growth MiB",
    },
    "loop": {
        "model": "model",
        "batch": "batch",
        "image_size": "pixels",
        "steps": "steps timed",
        "plain_ms": "plain loop ms/step",
        "lightning_ms": "Lightning ms/step",
        "overhead": "overhead",
    },
    "targets": {"target": "target", "measured": "measured", "limit": "limit", "met": "met"},
    "classes": {
        "plugin": "plugin",
        "channels": "C",
        "sizes": "H = W",
        "paper_class": "paper's class",
        "memory_exponent": "memory ~ N^",
        "time_exponent": "latency ~ N^",
        "kernel": "SDPA kernel",
        "flag": "flag",
    },
}

SECTIONS = {
    "model_peers": "Side by side: whole models (images/s; ratios above 1: ours faster)",
    "plugin_peers": "Side by side: plugins against timm's (ratio below 1: ours faster)",
    "attention": "Fused attention against the explicit softmax(QK^T)V of the same block",
    "loop": "Lightning's loop against a plain PyTorch loop (median step)",
    "models": "Whole models (training: forward, backward and SGD step)",
}


def targets_summary(results: dict[str, list[dict]]) -> str:
    rows = [t.row() for t in targets_.evaluate(results)]
    return markdown_table(rows, COLUMNS["targets"]) if rows else "(no targets in these suites)"


def write(
    results: dict[str, list[dict]],
    out: Path,
    *,
    command: str,
    device: torch.device,
    elapsed_s: float,
) -> Path:
    """Write every table and plot of ``results`` into ``out``; returns the report's path."""
    targets = [t.row() for t in targets_.evaluate(results)]
    for name, rows in {**results, "targets": targets}.items():
        if rows:
            write_csv(rows, out / f"{name}.csv")
    info = machine()
    lines = [
        "# visionattn cost report",
        "",
        f"- command: `{command}`",
        f"- run: {datetime.date.today().isoformat()}, {elapsed_s / 60:.1f} min, on {device}",
        "- machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "- latency: median of at least the set repeats after warm-up (CUDA synchronised); "
        "memory: the allocator's peak above the inputs and weights; FLOPs = 2 x MACs, of one "
        "image (torch.utils.flop_counter: matmuls and convolutions, not softmax or "
        "element-wise ops)",
        "",
    ]
    if targets:
        lines += ["## Targets", "", markdown_table(targets, COLUMNS["targets"]), ""]
    for name, title in SECTIONS.items():
        if results.get(name):
            lines += [f"## {title}", "", markdown_table(results[name], COLUMNS[name]), ""]
    if results.get("plugins"):
        lines += _plugin_sections(results["plugins"], out)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _plugin_sections(rows: list[dict], out: Path) -> list[str]:
    lines = [
        "## Plugins alone",
        "",
        "Each plugin as `attn=<name>` configures it; conv plugins as a C -> C, stride-1 conv. "
        "Cells: forward+backward ms / peak MiB above the input; n/a where the plugin cannot take "
        "the size (plugins.csv says why). `plugins.csv` also has the forward-only figures.",
        "",
    ]
    classes = class_rows(rows)
    write_csv(classes, out / "classes.csv")
    lines += [
        "### Memory and time classes",
        "",
        "The exponent a of cost ~ N^a (N = H x W) fitted over the grid's sizes, forward+backward, "
        "beside the paper's class; a plugin more than "
        f"{TOLERANCE:g} above its class is flagged. Small maps flatten every curve, so a fitted "
        "exponent is a lower bound.",
        "",
        markdown_table(classes, COLUMNS["classes"]),
        "",
    ]
    for channels in dict.fromkeys(r["channels"] for r in rows):
        for batch in dict.fromkeys(r["batch"] for r in rows):
            case = [
                {**r, "cell": _cell(r)}
                for r in rows
                if r["channels"] == channels and r["batch"] == batch
            ]
            table, columns = pivot(case, "plugin", "size", "cell", fmt="{0}x{0}")
            biggest = max(r["size"] for r in case)
            largest = {r["plugin"]: r for r in case if r["size"] == biggest}
            for entry in table:
                big = largest.get(entry["plugin"], {})
                entry.update(
                    params=big.get("params"), gflops=big.get("gflops"), kernel=big.get("kernel")
                )
            columns.update(
                params="params", gflops=f"GFLOPs at {biggest}x{biggest}", kernel="SDPA kernel"
            )
            lines += [f"### C = {channels}, batch {batch}", "", markdown_table(table, columns), ""]
        plot = out / f"plugins_c{channels}.png"
        complexity_plot(rows, channels, plot)
        lines += [f"![plugins at C={channels}]({plot.name})", ""]
    return lines


def _cell(row: dict) -> str | None:
    """A plugin-table cell: forward+backward latency and peak memory, or None where unmeasured."""
    if "train_ms" not in row:
        return None
    return f"{row['train_ms']:.3g} ms / {row['train_peak_mib']:.3g} MiB"
