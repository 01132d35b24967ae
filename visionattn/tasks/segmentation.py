"""Semantic segmentation: a backbone at output stride 8 or 16, a decode head and an auxiliary
FCN head, cross-entropy on logits upsampled to the labels, mIoU from one confusion matrix."""

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

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
        ema, channels_last, compile: see :meth:`~visionattn.tasks.task.Task.finish_model`; the
            EMA is validated as ``val_ema/miou``, ``val_ema/pixel_acc``, ``val_ema/loss`` and
            ``val_ema/iou/<class>``.
    """

    data_kind = "segmentation"
    report_scores: ClassVar[dict[str, str]] = {"miou": "mIoU", "pixel_acc": "pixel acc"}

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
        ema: dict | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_segmentor(model, head, attn, num_classes, attn_at, aux_weight)
        self.finish_model(ema, channels_last, compile)
        self.inference = {"mode": "whole", **(inference or {})}
        self.val_metrics = nn.ModuleDict(
            {prefix: SegmentationMetrics(num_classes) for prefix in self.validated_models()}
        )
        self.class_names = [str(i) for i in range(num_classes)]
        # The last validation's scores, by the prefix of their logged keys ("val", "val_ema").
        self.scores: dict[str, dict] = {}

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

    def validate_model(self, model: nn.Module, batch: dict, prefix: str) -> dict:
        images, masks = batch["image"], batch["mask"]
        probs = segment(
            model.predict,
            images,
            self.hparams.num_classes,
            out_size=tuple(masks.shape[-2:]),
            **self.inference,
        )
        preds = probs.argmax(1)
        self.val_metrics[prefix].update(preds, masks)
        loss = F.nll_loss(probs.clamp_min(1e-8).log(), masks, ignore_index=255)
        self.log_val_loss(prefix, loss, len(images))
        return {"preds": preds}

    def on_validation_epoch_end(self) -> None:
        for prefix, metrics in self.val_metrics.items():
            # compute() sums the confusion matrices of all devices before the scores.
            computed = metrics.compute()
            metrics.reset()
            per_class = zip(self.class_names, computed["per_class_iou"].tolist(), strict=True)
            self.scores[prefix] = scores = {
                "miou": float(computed["miou"]),
                "pixel_acc": float(computed["pixel_acc"]),
                # None where a class is in neither the labels nor the predictions.
                "per_class_iou": {n: None if math.isnan(iou) else iou for n, iou in per_class},
            }
            self.log_dict(
                {f"{prefix}/miou": scores["miou"], f"{prefix}/pixel_acc": scores["pixel_acc"]},
                prog_bar=prefix == "val",
            )
            self.log_dict(
                {
                    f"{prefix}/iou/{name.replace(' ', '_')}": iou
                    for name, iou in scores["per_class_iou"].items()
                    if iou is not None
                }
            )

    def summary(self, metrics: dict[str, float]) -> dict:
        def scores(prefix: str) -> dict:
            empty = {"miou": None, "pixel_acc": None, "per_class_iou": {}}
            return {**self.scores.get(prefix, empty), "loss": metrics.get(f"{prefix}/loss")}

        summary = {**scores("val"), "inference": dict(self.inference)}
        if self.model_ema is not None:
            summary["ema"] = scores("val_ema")
        return summary
