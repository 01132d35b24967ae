"""Image classification: cross-entropy, top-1 and top-5 accuracy, timm optimiser and schedule."""

import math

import lightning as L
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from visionattn.models import create_model


class ClassificationTask(L.LightningModule):
    """Trains ``create_model(**model, attn=attn, num_classes=num_classes)``.

    Every argument is plain data and is saved in the checkpoint, so the model can be rebuilt from
    the checkpoint alone.

    Args:
        model: ``name`` and backbone arguments for :func:`visionattn.create_model`.
        attn: the plugin config (``name`` and its knobs), or None.
        num_classes: classifier outputs.
        optimizer: arguments of ``timm.optim.create_optimizer_v2`` (``opt``, ``lr``, ...).
        scheduler: arguments of ``timm.scheduler.create_scheduler_v2`` (``sched``,
            ``warmup_epochs``, ...); its length is the trainer's ``max_epochs``, stepped per update.
        label_smoothing: of the cross-entropy.
    """

    def __init__(
        self,
        model: dict,
        attn: dict | None,
        num_classes: int,
        optimizer: dict,
        scheduler: dict,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(attn=attn, num_classes=num_classes, **model)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labels = batch["label"]
        loss = self.criterion(self(batch["image"]), labels)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels)
        )
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=len(labels))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        labels = batch["label"]
        logits = self(batch["image"])
        self.val_acc1(logits, labels)
        self.val_acc5(logits, labels)
        metrics = {
            "val/loss": self.criterion(logits, labels),
            "val/acc1": self.val_acc1,
            "val/acc5": self.val_acc5,
        }
        self.log_dict(metrics, prog_bar=True, sync_dist=True, batch_size=len(labels))

    def configure_optimizers(self) -> dict:
        optimizer = create_optimizer_v2(self.model, **self.hparams.optimizer)
        # Length the schedule by epochs x updates per epoch, not by max_steps, so that stopping a
        # run early (max_steps) and resuming it replays the same learning rates.
        self.trainer.estimated_stepping_batches  # noqa: B018 - loads the train loader to count it
        updates_per_epoch = math.ceil(
            self.trainer.num_training_batches / self.trainer.accumulate_grad_batches
        )
        scheduler, _ = create_scheduler_v2(
            optimizer,
            num_epochs=self.trainer.max_epochs,
            step_on_epochs=False,
            updates_per_epoch=updates_per_epoch,
            **self.hparams.scheduler,
        )
        if scheduler is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped with the number of updates done so far.
        scheduler.step_update(num_updates=self.global_step)
