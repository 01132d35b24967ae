"""Shared by the tests: paths, config composition, running the entry points, reading logs."""

import csv
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def compose_config(overrides: list[str] = (), name: str = "train") -> DictConfig:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def script_env(tmp: Path) -> dict[str, str]:
    """Environment for an entry point that keeps wandb's and temporary files inside ``tmp``."""
    env = dict(os.environ)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "TMPDIR"):
        path = tmp / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env.pop("WANDB_MODE", None)
    return env


def run_script(
    script: str, *args: str, tmp: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=script_env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def evaluate(
    ckpt: str | Path, tmp: Path, *args: str, runner: Callable = run_script
) -> tuple[dict, subprocess.CompletedProcess]:
    """``eval.py ckpt_path=ckpt ARGS`` run in ``tmp``, which must succeed: its JSON and the run."""
    output = tmp / "eval.json"
    result = runner(
        "eval.py", f"ckpt_path={ckpt}", f"output={output}", f"hydra.run.dir={tmp}", *args, tmp=tmp
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text()), result


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """Rows of the run's (newest) metrics.csv."""
    [path] = sorted(run_dir.glob("csv/version_*/metrics.csv"))[-1:]
    with path.open() as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def read_wandb_records(run_file: Path, timeout: float = 60.0) -> list:
    """Records of an offline ``.wandb`` file, waiting until its exit record is written.

    The file is LevelDB-log framed: after a 7-byte header, 32 KiB blocks of chunks, each with a
    7-byte header (CRC32C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while True:
        data = run_file.read_bytes()
        assert data[:4] == b":W&B", f"{run_file} is not a wandb run file"
        records, pending, pos, block = [], b"", 7, 32768
        while pos + 7 <= len(data):
            left = block - pos % block
            length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
            if left < 7 or (length == 0 and kind == 0):
                pos += left
                continue
            pending += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):
                records.append(pb.Record.FromString(pending))
                pending = b""
        if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


class StepPrinter(Callback):
    """Prints ``STEP n`` after every training step, for a test to time a signal by:
    ``+callbacks.steps._target_=tests.helpers.StepPrinter``."""

    def on_train_batch_end(self, trainer, *args) -> None:
        print(f"STEP {trainer.global_step}", flush=True)


class RankDraws(Callback):
    """Prints ``DRAWS rank torch python numpy``, a draw of each generator as training starts:
    ``+callbacks.draws._target_=tests.helpers.RankDraws``."""

    def on_train_start(self, trainer, *args) -> None:
        draws = (torch.rand(()).item(), random.random(), np.random.rand())
        # One write, so that the ranks' lines do not interleave.
        os.write(1, f"DRAWS {trainer.global_rank} {' '.join(map(str, draws))}\n".encode())
