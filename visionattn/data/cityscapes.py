"""Cityscapes semantic segmentation: the 19 classes of its benchmark, from the fine labels.

https://www.cityscapes-dataset.com/ . The ``*_gtFine_labelIds.png`` files hold the 34 label ids;
the benchmark scores 19 of them (its "train ids"), the rest are ignored. The table comes from
torchvision's ``Cityscapes.classes``, the official one, with names and colours.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from torchvision.datasets import Cityscapes as _Official

from visionattn.data.download import DatasetError
from visionattn.data.segmentation import (
    IGNORE_INDEX,
    LabelledImages,
    SegmentationDataModule,
    check_pairs,
)

_TRAINED = sorted(
    (c for c in _Official.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id
)
CITYSCAPES_CLASSES = tuple(c.name for c in _TRAINED)
CITYSCAPES_PALETTE = [tuple(c.color) for c in _TRAINED]
# The train id of each label id; label ids outside the benchmark (and license plate's -1) ignored.
LABEL_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LABEL_TO_TRAIN_ID[[c.id for c in _TRAINED]] = [c.train_id for c in _TRAINED]

_DOWNLOADS = "https://www.cityscapes-dataset.com/downloads/"


def _not_found(root: Path, detail: str) -> DatasetError:
    return DatasetError(
        f"Cityscapes not found under {root}: {detail}. It cannot be downloaded automatically (the "
        f"site needs a login): get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
        f"{_DOWNLOADS} and unzip both into {root}, so that it holds leftImg8bit/ and gtFine/"
    )


class CityscapesSegmentation(LabelledImages):
    """One split of Cityscapes' finely labelled images, labels mapped to the 19 train ids.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"`` or ``"val"``.
        transform: applied to the sample dict.
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; valid: train, val")
        root = Path(root).expanduser()
        images_dir, labels_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        if not images_dir.is_dir() or not labels_dir.is_dir():
            raise _not_found(
                root,
                f"expected {images_dir}/<city>/*_leftImg8bit.png and "
                f"{labels_dir}/<city>/*_gtFine_labelIds.png",
            )
        images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetError(
                f"Cityscapes {split} split is empty: no {images_dir}/<city>/*_leftImg8bit.png"
            )
        suffix = ("_leftImg8bit.png", "_gtFine_labelIds.png")
        pairs = [(i, labels_dir / i.parent.name / i.name.replace(*suffix)) for i in images]
        pairs = check_pairs(pairs, f"Cityscapes {split} split")
        super().__init__(pairs, LABEL_TO_TRAIN_ID, transform)


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes, 19 classes, finely labelled images (2975 train, 500 val, 2048x1024).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        download: true only fails: Cityscapes needs a login; the error says what to fetch.
        **kwargs: the crop and loader settings of :class:`SegmentationDataModule`.
    """

    num_classes = len(CITYSCAPES_CLASSES)

    def __init__(
        self,
        root: str | Path,
        *,
        download: bool = False,
        **kwargs,
    ) -> None:
        # mmsegmentation's settings for this dataset, unless the config says otherwise.
        super().__init__(**(dict(image_size=(512, 1024), base_size=(2048, 1024)) | kwargs))
        self.class_names, self.palette = list(CITYSCAPES_CLASSES), list(CITYSCAPES_PALETTE)
        self.root, self.download = Path(root).expanduser(), download

    def prepare_data(self) -> None:
        if self.download and not (self.root / "leftImg8bit").is_dir():
            raise _not_found(self.root, "data.download=true cannot fetch it")

    def dataset(self, split: str, transform: Callable) -> Dataset:
        return CityscapesSegmentation(self.root, split, transform)
