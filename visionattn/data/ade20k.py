"""ADE20K as the MIT Scene Parsing Benchmark (SceneParse150): 150 classes of scenes.

Zhou et al., "Scene Parsing through ADE20K Dataset", CVPR 2017, http://sceneparsing.csail.mit.edu/
. The annotation PNGs hold 0 for "other" (no score counts it) and 1 to 150 for the classes;
here 0 becomes ignored (255) and the classes 0 to 149, mmsegmentation's ``reduce_zero_label``.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from visionattn.data.download import DatasetError, download
from visionattn.data.segmentation import (
    IGNORE_INDEX,
    LabelledImages,
    SegmentationDataModule,
    check_pairs,
    voc_palette,
)

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
# 0 ("other") and anything past the 150 classes ignored; class k stored as k + 1.
LABEL_TO_CLASS = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LABEL_TO_CLASS[1 : len(ADE20K_CLASSES) + 1] = np.arange(len(ADE20K_CLASSES))

URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
_FOLDER = "ADEChallengeData2016"
_SPLITS = {"train": "training", "val": "validation"}


def find_ade20k(root: str | Path) -> Path:
    """The ADEChallengeData2016 folder: ``root`` itself or ``root/ADEChallengeData2016``."""
    root = Path(root).expanduser()
    candidates = [root, root / _FOLDER]
    for folder in candidates:
        if (folder / "images").is_dir() and (folder / "annotations").is_dir():
            return folder
    raise DatasetError(
        f"ADE20K not found under {root}: expected images/ and annotations/ in one of "
        f"{', '.join(map(str, candidates))} (or set data.download=true, or extract {URL} into "
        f"{root})"
    )


class ADE20KSegmentation(LabelledImages):
    """One split of SceneParse150: ``"train"`` (20,210 images) or ``"val"`` (2,000).

    Args:
        root: the ADEChallengeData2016 folder or the folder that holds it.
        split: ``"train"`` or ``"val"``.
        transform: applied to the sample dict.
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None) -> None:
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: train, val")
        folder = find_ade20k(root)
        images_dir = folder / "images" / _SPLITS[split]
        labels_dir = folder / "annotations" / _SPLITS[split]
        images = sorted(images_dir.glob("*.jpg"))
        if not images:
            raise DatasetError(f"ADE20K {split} split is empty: no {images_dir}/*.jpg")
        pairs = [(image, labels_dir / f"{image.stem}.png") for image in images]
        super().__init__(check_pairs(pairs, f"ADE20K {split} split"), LABEL_TO_CLASS, transform)


class ADE20KDataModule(SegmentationDataModule):
    """ADE20K (SceneParse150), 150 classes.

    Args:
        root: where ADEChallengeData2016 is (see :class:`ADE20KSegmentation`), or goes with
            ``download``.
        download: fetch ADEChallengeData2016.zip (1 GB) into ``root`` if it is not there.
        **kwargs: the crop and loader settings of :class:`SegmentationDataModule`.
    """

    num_classes = len(ADE20K_CLASSES)

    def __init__(
        self,
        root: str | Path,
        *,
        download: bool = False,
        **kwargs,
    ) -> None:
        # mmsegmentation's settings for this dataset, unless the config says otherwise.
        settings = dict(image_size=512, base_size=(2048, 512), test_size=(2048, 512))
        super().__init__(**(settings | kwargs))
        self.class_names, self.palette = list(ADE20K_CLASSES), voc_palette(len(ADE20K_CLASSES))
        self.root, self.download = Path(root).expanduser(), download

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            find_ade20k(self.root)
        except DatasetError:
            download(URL, self.root, "ADE20K", str(self.root / _FOLDER))

    def dataset(self, split: str, transform: Callable) -> Dataset:
        return ADE20KSegmentation(self.root, split, transform)
