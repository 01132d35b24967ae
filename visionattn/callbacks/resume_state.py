"""Each rank's random stream, and what a checkpoint needs beyond Lightning's own state for a resumed
run to go on as if it had never stopped: every rank's random generators (Lightning saves none), the
number of ranks, and the wandb run id, so the resumed run logs to the same wandb run."""

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger


class ResumeState(Callback):
    """Seeds rank r's generators with ``seed + r`` once the ranks exist (as timm does), so that
    dropout, drop-path and augmentation drawn in the training process differ between GPUs; a
    resumed run then restores the saved states over them.

    The model is built before (from ``seed`` alone, the same on every rank), and the loader
    workers' streams come from ``data.seed``, the worker and the rank.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        # Lightning restores a checkpoint's callback states after every setup hook.
        L.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank when a checkpoint is made; rank 0's dict is the one written.
        states = [rng_states()]
        if dist.is_available() and dist.is_initialized():
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, rng_states())
        return {"rng_states": states, "wandb_run_id": wandb_run_id(self._trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # train.py refuses another number of ranks before training (saved_world_size).
        rank = self._trainer.global_rank if self._trainer else 0
        set_rng_states(state_dict["rng_states"][rank])


def rng_states() -> dict[str, Any]:
    """Lightning's collection of the torch, CUDA, NumPy and Python generators, with NumPy's key
    as a tensor: checkpoints load with ``weights_only=True``, which refuses NumPy arrays."""
    states = _collect_rng_states()
    kind, key, *rest = states["numpy"]
    states["numpy"] = (kind, torch.from_numpy(key.astype(np.int64)), *rest)
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    kind, key, *rest = states["numpy"]
    _set_rng_states({**states, "numpy": (kind, key.numpy().astype(np.uint32), *rest)})


def wandb_run_id(trainer: L.Trainer | None) -> str | None:
    for logger in trainer.loggers if trainer else ():
        if isinstance(logger, WandbLogger):
            return logger.version
    return None


def _saved(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return checkpoint.get("callbacks", {}).get(ResumeState.__qualname__, {})


def saved_wandb_run_id(checkpoint: dict[str, Any]) -> str | None:
    """The wandb run id a checkpoint written with :class:`ResumeState` carries, if any."""
    return _saved(checkpoint).get("wandb_run_id")


def saved_world_size(checkpoint: dict[str, Any]) -> int | None:
    """The number of ranks that wrote a checkpoint of :class:`ResumeState` (one saved random
    state each), if it says."""
    states = _saved(checkpoint).get("rng_states")
    return len(states) if states else None
