"""Image classification: cross-entropy with label smoothing, or timm's mixup and cutmix with its
soft-target loss; top-1 and top-5 accuracy; timm optimiser and schedule."""

from typing import ClassVar

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from visionattn.models import create_model
from visionattn.tasks.task import Task


class ClassificationTask(Task):
    """Trains ``create_model(**model, attn=attn, num_classes=num_classes)``.

    Every argument is plain data and is saved in the checkpoint, so the model can be rebuilt from
    the checkpoint alone.

    Args:
        model: ``name`` and backbone arguments for :func:`visionattn.create_model`.
        attn: the plugin config (``name`` and its knobs), or None.
        num_classes: classifier outputs.
        optimizer, scheduler: see :class:`~visionattn.tasks.task.Task`.
        label_smoothing: of the training targets (validation's loss is plain cross-entropy).
        mixup: arguments of ``timm.data.Mixup`` (``mixup_alpha``, ``cutmix_alpha``, ``prob``,
            ``switch_prob``, ``mode``, ...); off where both alphas are 0 or it is None. Mixed
            batches train on soft targets with timm's ``SoftTargetCrossEntropy``.
    """

    data_kind = "classification"
    report_scores: ClassVar[dict[str, str]] = {"acc1": "acc1", "acc5": "acc5"}

    def __init__(
        self,
        model: dict,
        attn: dict | None,
        num_classes: int,
        optimizer: dict,
        scheduler: dict,
        label_smoothing: float = 0.0,
        mixup: dict | None = None,
        ema: dict | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(attn=attn, num_classes=num_classes, **model)
        self.finish_model(ema, channels_last, compile)
        mixup = mixup or {}
        self.mixup = None
        if mixup.get("mixup_alpha", 0.0) > 0 or mixup.get("cutmix_alpha", 0.0) > 0:
            self.mixup = Mixup(**mixup, label_smoothing=label_smoothing, num_classes=num_classes)
            self.train_criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.train_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.criterion = nn.CrossEntropyLoss()
        top5 = min(5, num_classes)
        self.val_metrics = nn.ModuleDict(
            {
                prefix: nn.ModuleDict(
                    {
                        "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                        "acc5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
                    }
                )
                for prefix in self.validated_models()
            }
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        if self.mixup is not None:
            if len(labels) % 2:  # timm mixes the batch with its reverse: an even count
                images, labels = images[:-1], labels[:-1]
            images, labels = self.mixup(images, labels)
        loss = self.train_criterion(self(images), labels)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels)
        )
        self.log_lr(len(labels))
        return loss

    def validate_model(self, model: nn.Module, batch: dict, prefix: str) -> None:
        labels = batch["label"]
        logits = model(batch["image"])
        accuracies = self.val_metrics[prefix]
        for accuracy in accuracies.values():
            accuracy(logits, labels)
        # Accuracies and the loss sum their counts over the devices at the epoch's end.
        metrics = {f"{prefix}/{name}": accuracy for name, accuracy in accuracies.items()}
        self.log_dict(metrics, prog_bar=prefix == "val")
        self.log_val_loss(prefix, self.criterion(logits, labels), len(labels))

    def summary(self, metrics: dict[str, float]) -> dict:
        def scores(prefix: str) -> dict:
            return {key: metrics.get(f"{prefix}/{key}") for key in ("acc1", "acc5", "loss")}

        summary = scores("val")
        if self.model_ema is not None:
            summary["ema"] = scores("val_ema")
        return summary
