"""Semantic segmentation: a backbone at output stride 8 or 16, a decode head and an auxiliary
FCN head, cross-entropy on logits upsampled to the labels, mIoU from one confusion matrix."""

import math

import torch
import torch.nn.functional as F

from visionattn.report import percent
from visionattn.segmentation import create_segmentor
from visionattn.segmentation.inference import segment
from visionattn.segmentation.loss import segmentation_loss
from visionattn.segmentation.metrics import SegmentationMetrics
from visionattn.tasks.task import Task


class SegmentationTask(Task):
    """Trains ``create_segmentor(model, head, attn, num_classes, attn_at, aux_weight)``.

    Every argument is plain data and is saved in the checkpoint, so the model can be rebuilt from
    the checkpoint alone.

    Args:
        model: ``name`` and backbone arguments for :func:`visionattn.create_model`
            (``output_stride`` 8 or 16 dilates the last stages).
        head: the decode head's config: ``name`` (fcn, deeplabv3, attention) and its knobs.
        attn: the plugin config (``name`` and its knobs), or None.
        num_classes: classes of the labels (255 is ignored).
        optimizer, scheduler: see :class:`~visionattn.tasks.task.Task`.
        attn_at: where the plugin goes: "head" (the attention head), "backbone" (its blocks, as
            in classification, placed by ``attn.stages`` and ``attn.blocks``) or "both".
        aux_weight: loss weight of the auxiliary FCN head on the stride-16 features; 0 drops it.
        ohem: ``{"thresh": 0.7, "min_kept": 100000}`` to train on hard pixels only, or None.
        inference: how validation predicts: ``mode`` ("whole" or "slide", with ``crop`` and
            ``stride``), ``flip`` and ``scales``; see
            :func:`visionattn.segmentation.inference.segment`.
    """

    data_kind = "segmentation"

    def __init__(
        self,
        model: dict,
        head: dict,
        attn: dict | None,
        num_classes: int,
        optimizer: dict,
        scheduler: dict,
        attn_at: str = "head",
        aux_weight: float = 0.4,
        ohem: dict | None = None,
        inference: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_segmentor(model, head, attn, num_classes, attn_at, aux_weight)
        self.inference = {"mode": "whole", **(inference or {})}
        self.val_metrics = SegmentationMetrics(num_classes)
        self.class_names = [str(i) for i in range(num_classes)]
        self.scores: dict = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        names = getattr(self.trainer.datamodule, "class_names", None)
        if names is not None:
            self.class_names = list(names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the images' size."""
        return self.model.predict(images)

    def losses(self, outputs: dict[str, torch.Tensor], masks: torch.Tensor) -> dict:
        """``loss``, what is minimised: the decode head's plus ``aux_weight`` times the auxiliary
        head's, each also on its own (``decode``, ``aux``)."""
        ohem = self.hparams.ohem
        losses = {"decode": segmentation_loss(outputs["out"], masks, ohem=ohem)}
        losses["loss"] = losses["decode"]
        if "aux" in outputs:
            losses["aux"] = segmentation_loss(outputs["aux"], masks, ohem=ohem)
            losses["loss"] = losses["loss"] + self.hparams.aux_weight * losses["aux"]
        return losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"]
        losses = self.losses(self.model(images), masks)
        loss, batch_size = losses.pop("loss"), len(images)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
        )
        parts = {f"train/loss_{name}": loss.detach() for name, loss in losses.items()}
        self.log_dict(parts, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log_lr(batch_size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        images, masks = batch["image"], batch["mask"]
        probs = segment(
            self.model.predict,
            images,
            self.hparams.num_classes,
            out_size=tuple(masks.shape[-2:]),
            **self.inference,
        )
        preds = probs.argmax(1)
        self.val_metrics.update(preds, masks)
        loss = F.nll_loss(probs.clamp_min(1e-8).log(), masks, ignore_index=255)
        self.log("val/loss", loss, sync_dist=True, batch_size=len(images))
        return {"preds": preds}

    def on_validation_epoch_end(self) -> None:
        # compute() sums the confusion matrices of all devices before the scores.
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        per_class = zip(self.class_names, scores["per_class_iou"].tolist(), strict=True)
        self.scores = {
            "miou": float(scores["miou"]),
            "pixel_acc": float(scores["pixel_acc"]),
            # None where a class is in neither the labels nor the predictions.
            "per_class_iou": {name: None if math.isnan(iou) else iou for name, iou in per_class},
        }
        self.log_dict(
            {"val/miou": self.scores["miou"], "val/pixel_acc": self.scores["pixel_acc"]},
            prog_bar=True,
        )
        self.log_dict(
            {
                f"val/iou/{name.replace(' ', '_')}": iou
                for name, iou in self.scores["per_class_iou"].items()
                if iou is not None
            }
        )

    def summary(self, metrics: dict[str, float]) -> dict:
        scores = self.scores or {"miou": None, "pixel_acc": None, "per_class_iou": {}}
        return {**scores, "loss": metrics.get("val/loss"), "inference": dict(self.inference)}

    def summary_rows(self, summary: dict, best: float | None = None) -> list[tuple[str, str]]:
        miou = percent(summary["miou"])
        if best is not None:
            miou += f" last epoch, {percent(best)} best"
        return [("val mIoU", miou), ("val pixel acc", percent(summary["pixel_acc"]))]
