"""Report, at the end of every epoch, how many images the loaders skipped as unreadable (see
:mod:`visionattn.data.classification`): each was named in a warning when it was met."""

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class SkippedImages(Callback):
    """Sums the datamodule's per-epoch count of skipped images over the ranks, logs it as
    ``data/skipped_train`` or ``data/skipped_val`` and warns once, on rank 0, where it is not 0.
    ``total`` keeps the run's sums."""

    def __init__(self) -> None:
        self.total = {"train": 0, "val": 0}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:  # its few batches are read again in the first epoch
            getattr(trainer.datamodule, "skipped", {}).pop("val", None)
        else:
            self._report(trainer, pl_module, "val")

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        skipped = getattr(trainer.datamodule, "skipped", None)
        if skipped is None:
            return
        # Every rank reaches here, so the sum is a collective all of them join; on the module's
        # device, as NCCL reduces CUDA tensors only (and Lightning's reduce does not move it).
        count = torch.tensor(skipped.pop(stage, 0), device=pl_module.device)
        count = int(trainer.strategy.reduce(count, reduce_op="sum"))
        self.total[stage] += count
        pl_module.log(f"data/skipped_{stage}", float(count), rank_zero_only=True)
        if count and trainer.is_global_zero:
            split = "training" if stage == "train" else "validation"
            log.warning(
                "epoch %d: skipped %d unreadable %s image%s (named in the warnings above)",
                trainer.current_epoch,
                count,
                split,
                "s" * (count != 1),
            )

    def rows(self) -> list[tuple[str, str]]:
        """The report's row, where any image was skipped."""
        if not any(self.total.values()):
            return []
        train, val = self.total["train"], self.total["val"]
        return [("skipped images", f"{train} training, {val} validation (unreadable, in the log)")]
