"""Average the BatchNorm running statistics over the ranks before each validation of a ddp run.

Without SyncBatchNorm every rank's running mean and variance follow its own batches, so ranks
would validate different models, and the checkpoint would hold rank 0's alone. timm's train.py
does the same (``--dist-bn reduce``).
"""

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from timm.utils import distribute_bn


class AverageBatchNormStats(Callback):
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and trainer.world_size > 1:
            distribute_bn(pl_module, trainer.world_size, reduce=True)
