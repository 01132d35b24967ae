"""Carry the run's resolved config in every checkpoint, as mmengine does, so that ``eval.py``
needs nothing but the checkpoint to rebuild the model and its data."""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

CONFIG_KEY = "visionattn_config"


class StoreConfig(Callback):
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
