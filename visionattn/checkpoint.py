"""Reading checkpoints that may come from anywhere: tensors and plain data only, no code; and
which checkpoint a run resumes from.

Lightning checkpoints written by ``train.py`` load with ``weights_only=True``; the run's config
rides along (:class:`visionattn.callbacks.StoreConfig`), and only visionattn's own classes may be
built from it, so a checkpoint cannot name a function to call.
"""

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from visionattn.callbacks.store_config import CONFIG_KEY

TRUSTED_PREFIX = "visionattn."


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, or not one of ours; the message names the path."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint to the CPU with ``weights_only=True``, tensors memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch.save zip archive")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from e


def run_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The resolved config of the run that wrote ``checkpoint``."""
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"checkpoint {path} has no run config: it was not written by train.py"
        )
    return checkpoint[CONFIG_KEY]


def _targets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "_target_" in node:
            yield str(node["_target_"])
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def instantiate_trusted(config: dict[str, Any]) -> Any:
    """``hydra.utils.instantiate`` for a config read from a checkpoint: every ``_target_`` in it
    must be a visionattn class."""
    for target in _targets(config):
        if not target.startswith(TRUSTED_PREFIX):
            raise CheckpointError(
                f"refusing to build {target!r} named in a checkpoint: only {TRUSTED_PREFIX}* "
                "classes are built from checkpoints"
            )
    return instantiate(config)


def resume_path(resume: str | bool, last: Path) -> Path | None:
    """The checkpoint to continue from under ``resume``, or None to start afresh."""
    if resume not in ("auto", False):
        raise CheckpointError(f"resume={resume} is not an option: resume=auto or resume=false")
    if not last.exists():
        return None
    if resume == "auto":
        return last
    raise CheckpointError(
        f"{last.parent.parent} already holds a run ({last}): resume=auto continues it, "
        "another name=... starts a new one"
    )


def check_same_model(saved: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """A checkpoint of another model or plugin would fail deep inside Lightning's restore."""

    def architecture(task: dict[str, Any], key: str) -> Any:
        part = task.get(key)
        # The weights a run started from do not change what it is.
        return {k: v for k, v in part.items() if k != "pretrained"} if part else part

    for key in ("model", "attn", "head"):
        before, now = architecture(saved["task"], key), architecture(config["task"], key)
        if before != now:
            raise CheckpointError(
                f"{path} was trained with {key}={(before or {}).get('name')} and other settings "
                f"than this run's {key}={(now or {}).get('name')}: pass the same {key} options, "
                "or another name=... to start a new run"
            )
