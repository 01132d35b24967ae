"""What a checkpoint needs, beyond Lightning's own state, for a resumed run to go on as if it had
never stopped: every rank's random generators (Lightning saves none) and the wandb run id, so the
resumed run logs to the same wandb run."""

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger


class ResumeState(Callback):
    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank when a checkpoint is made; rank 0's dict is the one written.
        states = [rng_states()]
        if dist.is_available() and dist.is_initialized():
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, rng_states())
        return {"rng_states": states, "wandb_run_id": wandb_run_id(self._trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict["rng_states"]
        rank = self._trainer.global_rank if self._trainer else 0
        # A run resumed on fewer or more ranks than it was saved from still gets a saved state.
        set_rng_states(states[rank % len(states)])


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


def saved_wandb_run_id(checkpoint: dict[str, Any]) -> str | None:
    """The wandb run id a checkpoint written with :class:`ResumeState` carries, if any."""
    return checkpoint.get("callbacks", {}).get(ResumeState.__qualname__, {}).get("wandb_run_id")
