"""The embedded shapes data (:mod:`visionattn.data.shapes`) for segmentation, no download: each
pixel is the background (0) or the class of the shape it lies on (its label + 1)."""

from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from visionattn.data.segmentation import SegmentationDataModule, voc_palette
from visionattn.data.shapes import SHAPES, ShapesDataset


class ShapesSegmentationDataModule(SegmentationDataModule):
    """Rendered shapes: ``train_size`` training and ``val_size`` validation images.

    Training takes the real datasets' transform (rescale relative to ``image_size``, crop back
    to it, flip, photometric distortion); validation images are all ``image_size``, so they are
    only normalised and go in batches of ``batch_size``.

    Args:
        image_size: side of the square images.
        num_classes: the background and the shapes: 3 to 11 (2 to 10 of :data:`SHAPES`).
        train_size: training images per epoch.
        val_size: validation images.
        seed: fixes every image; the loaders' shuffle uses it too.
        cache: keep rendered samples in memory (see :class:`ShapesDataset`).
        scene: ``"plain"`` or ``"hard"`` (see :data:`visionattn.data.shapes.SCENES`).
        scale_range: the random rescale's ratios of ``image_size``.
        batch_size, num_workers, mean, std, loader: see :class:`SegmentationDataModule`.
    """

    def __init__(
        self,
        image_size: int = 64,
        num_classes: int = len(SHAPES) + 1,
        train_size: int = 512,
        val_size: int = 128,
        seed: int = 0,
        cache: bool = True,
        scene: str = "plain",
        batch_size: int = 16,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        scale_range: Sequence[float] = (0.5, 2.0),
        **loader: Any,
    ) -> None:
        if not 3 <= num_classes <= len(SHAPES) + 1:
            raise ValueError(
                f"num_classes counts the background and the shapes: 3 to {len(SHAPES) + 1}, "
                f"got {num_classes}"
            )
        super().__init__(
            image_size,
            base_size=image_size,
            scale_range=scale_range,
            batch_size=batch_size,
            val_batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            mean=mean,
            std=std,
            **loader,
        )
        self.num_classes = num_classes
        self.class_names = ["background", *SHAPES[: num_classes - 1]]
        self.palette = voc_palette(num_classes)
        self.train_size, self.val_size, self.cache = train_size, val_size, cache
        self.scene = scene

    def dataset(self, split: str, transform: Callable) -> Dataset:
        return ShapesDataset(
            split,
            self.train_size if split == "train" else self.val_size,
            image_size=self.image_size,
            num_classes=self.num_classes - 1,
            seed=self.seed,
            transform=transform,
            cache=self.cache,
            scene=self.scene,
        )
