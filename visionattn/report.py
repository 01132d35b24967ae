"""What the entry points print: one table of accuracy and cost, and the command to run next."""

import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

_HYDRA_SAFE = re.compile(r"[\w\-./:+@~]+")


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def eval_command(ckpt_path: str | Path, ema: bool = False) -> str:
    """The shell line that evaluates ``ckpt_path`` (its weights' average with ``ema``), quoted
    for Hydra and for the shell."""
    value = display_path(ckpt_path)
    if not _HYDRA_SAFE.fullmatch(value):
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    command = f"python eval.py {shlex.quote('ckpt_path=' + value)}"
    return command + " ema=true" if ema else command


def si(value: float, unit: str = "") -> str:
    """``2801450`` -> ``2.80 M``: a count with its SI prefix."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def cost_rows(
    cost: Mapping[str, float], params: int | None, flops: int | None
) -> list[tuple[str, str]]:
    """Rows for the cost figures of :class:`visionattn.callbacks.CostMonitor`."""
    rows = []
    if cost:
        per_device = cost["throughput_per_device"]
        step_ms, data_ms = cost["step_time"] * 1e3, cost["data_time"] * 1e3
        rows += [
            ("throughput", f"{cost['throughput']:.1f} images/s ({per_device:.1f} per device)"),
            ("step time", f"{step_ms:.1f} ms compute + {data_ms:.1f} ms data wait"),
            ("peak memory", f"{cost['peak_memory_mb']:.0f} MiB"),
        ]
    if params is not None:
        rows.append(("parameters", si(params)))
    if flops is not None:
        rows.append(("FLOPs", f"{si(flops, 'FLOPs')} an image (forward)"))
    return rows


def print_report(title: str, rows: list[tuple[str, str]], footer: list[str] = ()) -> None:
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    console = Console(width=max(100, Console().width))
    console.print()
    console.print(table)
    for line in footer:
        console.print(line, soft_wrap=True, highlight=False)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def write_json(path: str | Path, data: Mapping) -> None:
    """Write ``data`` so that a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def check_output_path(output: str | Path, ckpt_path: str | Path) -> None:
    """Refuse an eval output that would replace a checkpoint or another file of the run that
    wrote ``ckpt_path`` (its config, logs, metrics): only a JSON that eval wrote may be replaced.
    Raises ``ValueError`` naming the file and the fix."""
    output, ckpt = Path(output), Path(ckpt_path)
    if output.is_dir():
        raise ValueError(
            f"output={output} is a folder: give a file, e.g. output={output}/eval.json"
        )
    if not output.exists():
        return
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    owned = output.resolve().is_relative_to(run_dir.resolve())
    if output.suffix in CHECKPOINT_SUFFIXES or (owned and not _eval_result(output)):
        raise ValueError(
            f"output={output} is an existing file of the run (a checkpoint, config or log) and "
            "eval would replace it: give a new file, e.g. output=eval.json"
        )


def _eval_result(path: Path) -> bool:
    """Whether ``path`` is a JSON that eval.py wrote (it names the checkpoint it evaluated)."""
    try:
        return "ckpt_path" in json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError):
        return False
