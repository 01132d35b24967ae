"""Coloured predictions of the first validation images, saved as PNG for a look by eye."""

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from torchvision.transforms.v2 import functional as TF

from visionattn.segmentation.overlay import denormalize, save_overlays


class SegmentationOverlays(Callback):
    """Writes ``dirpath/0000.png`` ... for the first ``num_images`` validation images: the image,
    the prediction over it, and the labels, in the datamodule's palette.

    The segmentation task's ``validation_step`` returns ``{"preds": (B, H, W)}`` at the labels'
    size; images resized for testing are resized back to it. Only rank 0 writes.
    """

    def __init__(self, num_images: int, dirpath: str | Path) -> None:
        self.num_images, self.dirpath, self.saved = num_images, Path(dirpath), 0

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.saved >= self.num_images:
            return
        datamodule = trainer.datamodule
        take = min(len(batch["image"]), self.num_images - self.saved)
        masks = batch["mask"][:take].cpu()
        images = denormalize(batch["image"][:take].float().cpu(), datamodule.mean, datamodule.std)
        if images.shape[-2:] != masks.shape[-2:]:
            images = TF.resize(images, list(masks.shape[-2:]), antialias=True)
        preds = outputs["preds"][:take].cpu()
        save_overlays(self.dirpath, images, preds, masks, datamodule.palette, self.saved)
        self.saved += take
