"""The embedded shapes data (:mod:`visionattn.data.shapes`) as a LightningDataModule."""

from collections.abc import Sequence
from typing import Any

from visionattn.data.datamodule import ImageDataModule, positive
from visionattn.data.shapes import SHAPES, ShapesDataset


class ShapesDataModule(ImageDataModule):
    """Rendered shapes: ``train_size`` training and ``val_size`` validation images, no download.

    Args:
        image_size: side of the square images.
        num_classes: how many shape classes, 2 to 10.
        train_size: training images per epoch.
        val_size: validation images.
        seed: fixes every image; the loaders' shuffle uses it too.
        cache: keep rendered samples in memory (see :class:`ShapesDataset`).
        scene: ``"plain"`` or ``"hard"`` (see :data:`visionattn.data.shapes.SCENES`).
        batch_size, num_workers, mean, std, loader: see :class:`ImageDataModule` (``loader``:
            pin_memory, persistent_workers, prefetch_factor).
    """

    def __init__(
        self,
        image_size: int = 32,
        num_classes: int = len(SHAPES),
        train_size: int = 10000,
        val_size: int = 2000,
        seed: int = 0,
        cache: bool = True,
        scene: str = "plain",
        batch_size: int = 64,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        **loader: Any,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, mean, std, **loader)
        self.image_size = positive("data.image_size", image_size)
        self.num_classes = num_classes
        self.train_size, self.val_size, self.cache = train_size, val_size, cache
        self.scene = scene

    def setup(self, stage: str | None = None) -> None:
        kwargs = dict(
            image_size=self.image_size,
            num_classes=self.num_classes,
            seed=self.seed,
            cache=self.cache,
            scene=self.scene,
        )
        self.train_set = ShapesDataset("train", self.train_size, transform=self.normalize, **kwargs)
        self.val_set = ShapesDataset("val", self.val_size, transform=self.normalize, **kwargs)
