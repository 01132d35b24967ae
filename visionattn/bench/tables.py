"""The benchmark's tables as CSV (every figure, full precision) and as markdown (rounded for
reading), and the machine a run measured."""

import csv
import os
import platform
from pathlib import Path

import torch


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _cell(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        return (
            f"{value:.3g}"
            if magnitude < 10
            else f"{value:,.1f}"
            if magnitude < 1e4
            else (f"{value:,.0f}")
        )
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """``columns`` maps row keys to headings, in order; missing values are blank cells."""
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def pivot(
    rows: list[dict], index: str, column: str, value: str, fmt: str = "{}"
) -> tuple[list[dict], dict[str, str]]:
    """Rows of ``index``, one column per value of ``column``, cells ``value`` (for markdown)."""
    keys = list(dict.fromkeys(row[column] for row in rows))
    table: dict[object, dict] = {}
    for row in rows:
        cell = table.setdefault(row[index], {index: row[index]})
        cell[f"c{row[column]}"] = row.get(value, "") if value in row else "n/a"
    columns = {index: index, **{f"c{key}": fmt.format(key) for key in keys}}
    return list(table.values()), columns


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info
