"""Reading what a training run wrote: its resolved config, its CSV log and its Hydra choices.

A run directory is one that holds ``config.yaml`` (train.py writes it once every check passed);
a sweep directory is searched for them. Nothing is imported or executed from a run: the config is
read as plain YAML and the CSV as text.
"""

import csv
import dataclasses
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Config keys that name, place or log a run without changing what it trains: two runs that
# differ only here (and in attn and seed) are seeds or plugins of the same recipe.
NOT_RECIPE = (
    "name",
    "task_name",
    "seed",
    "attn",
    "resume",
    "requeue_signal",
    "ckpt_path",
    "memory_limit_mb",
    "paths",
    "logger",
    "callbacks.model_checkpoint.dirpath",
    "callbacks.progress_bar",
    "callbacks.rich_progress_bar",  # its name in runs before the compact bar
    "trainer.default_root_dir",
    # The task's copies of the top-level groups (interpolations, resolved): the group says it.
    "task.model",
    "task.attn",
    "task.head",
    "task.optimizer",
    "task.scheduler",
    "task.num_classes",
)


class RunError(ValueError):
    """A run directory that cannot be read: its message names the file and what is wrong."""


@dataclasses.dataclass
class Run:
    """One training run, as far as its files tell."""

    path: Path
    config: dict[str, Any]  # flattened: "data.batch_size" -> 64
    choices: dict[str, str]  # Hydra's group choices: "model" -> "resnet18_half"
    metric: str  # the monitored metric, e.g. "val/acc1"
    epochs: int  # validated epochs in the log
    max_epochs: int
    value: float | None  # the metric at the last validated epoch
    cost: dict[str, float]  # params, flops, throughput, peak_memory_mb

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def attn(self) -> str:
        return self.config.get("attn.name", "none")

    @property
    def finished(self) -> bool:
        return self.epochs >= self.max_epochs and self.value is not None

    @property
    def recipe(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if not _under(k, NOT_RECIPE)}

    def group(self, key: str) -> Any:
        """The value of ``key`` for this run: a Hydra group's choice (``model``, ``data``) or a
        config key (``data.batch_size``)."""
        if key in self.choices:
            return self.choices[key]
        if key in self.config:
            return self.config[key]
        found = {k: v for k, v in self.config.items() if _under(k, (key,))}
        if not found:
            raise KeyError(key)
        return ", ".join(f"{k[len(key) + 1 :]}={v}" for k, v in found.items())


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def flatten(config: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples, so values can be compared."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def find_runs(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every run directory at or below ``paths``, each once, in path order. Raises
    :class:`RunError` for a path that does not exist or holds no run."""
    seen = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunError(f"{path}: no such directory")
        found = sorted(p.parent for p in path.rglob("config.yaml") if _is_run(p.parent))
        if not found:
            raise RunError(f"{path}: no run in it (a run directory holds config.yaml and csv/)")
        for run in found:
            if run.resolve() not in seen:
                seen.add(run.resolve())
                yield run


def _is_run(path: Path) -> bool:
    # .hydra/config.yaml is Hydra's copy, written before train.py's checks.
    return path.name != ".hydra" and (path / "csv").is_dir()


def read_run(path: Path) -> Run:
    """Read a run directory. Raises :class:`RunError` for a config or log that cannot be read."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=False)
    except Exception as e:
        raise RunError(f"{path / 'config.yaml'}: cannot be read ({e})") from None
    if not isinstance(config, dict) or "seed" not in config:
        raise RunError(f"{path / 'config.yaml'}: not a training run's config (no seed)")
    flat = flatten(config)
    metric = config.get("monitor") or "val/acc1"
    rows = read_log(path)
    validated = {}  # epoch -> metric; a resumed run's later versions win
    for row in rows:
        if row.get(metric):
            validated[int(row["epoch"])] = float(row[metric])
    last = max(validated) if validated else None
    return Run(
        path=path,
        config=flat,
        choices=_choices(path),
        metric=metric,
        epochs=0 if last is None else last + 1,
        max_epochs=int(flat.get("trainer.max_epochs") or 0),
        value=None if last is None else validated[last],
        cost=_cost(rows),
    )


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of every ``csv/version_*/metrics.csv`` of a run, oldest version first. Raises
    :class:`RunError` naming a file that is missing or cut short."""
    files = sorted(
        (path / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])
    )
    if not files:
        raise RunError(f"{path / 'csv'}: no metrics.csv (the run stopped before its first step?)")
    rows = []
    for file in files:
        text = file.read_text()
        if text and not text.endswith("\n"):
            line = text.count("\n") + 1
            raise RunError(f"{file}: line {line} ends without a newline (cut short?)")
        with open(file, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise RunError(f"{file}: empty")
            for line, values in enumerate(reader, start=2):
                if len(values) != len(header):
                    raise RunError(
                        f"{file}: line {line} has {len(values)} of {len(header)} columns "
                        "(cut short?)"
                    )
                rows.append(dict(zip(header, values, strict=True)))
    return rows


def _choices(path: Path) -> dict[str, str]:
    hydra = path / ".hydra" / "hydra.yaml"
    if not hydra.is_file():
        return {}
    choices = OmegaConf.load(hydra).hydra.runtime.choices
    return {k: str(v) for k, v in choices.items() if not k.startswith("hydra")}


def _cost(rows: list[dict[str, str]]) -> dict[str, float]:
    """The cost card as the run's report prints it: the model's size once, and the training
    throughput and peak memory of the last epoch."""

    def last(key: str) -> float:
        values = [float(r[key]) for r in rows if r.get(key)]
        return values[-1] if values else math.nan

    return {
        "params": last("model/params"),
        "flops": last("model/flops"),
        "throughput": last("train/throughput_epoch"),
        "peak_memory_mb": last("train/peak_memory_mb_epoch"),
    }
