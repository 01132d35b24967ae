"""PASCAL VOC 2012 semantic segmentation: 20 object classes and the background.

http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ . The label PNGs are palette images whose indices
are the classes (0 to 20) and 255 on the objects' borders, which no score counts. ``aug`` trains
on the 10,582 images of the SBD-augmented set (Hariharan et al., "Semantic contours from inverse
detectors", ICCV 2011) in mmsegmentation's layout, the usual protocol; validation stays VOC's own
1,449 images.
"""

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.voc import DATASET_YEAR_DICT

from visionattn.data.download import DatasetError, download
from visionattn.data.segmentation import (
    LabelledImages,
    SegmentationDataModule,
    check_pairs,
    voc_palette,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
_ARCHIVE = DATASET_YEAR_DICT["2012"]


def find_voc(root: str | Path) -> Path:
    """The VOC2012 folder: ``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = Path(root).expanduser()
    candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    for folder in candidates:
        if (folder / "JPEGImages").is_dir() and (folder / "ImageSets" / "Segmentation").is_dir():
            return folder
    raise DatasetError(
        f"VOC 2012 not found under {root}: expected JPEGImages/, SegmentationClass/ and "
        f"ImageSets/Segmentation/ in one of {', '.join(map(str, candidates))} (or set "
        f"data.download=true, or extract {_ARCHIVE['url']} into {root})"
    )


class VOCSegmentation(LabelledImages):
    """One split of VOC 2012: ``"train"`` (or SBD's ``train_aug`` with ``aug``) or ``"val"``.

    Args:
        root: the VOC2012 folder, the VOCdevkit folder or the folder that holds VOCdevkit.
        split: ``"train"`` or ``"val"``.
        aug: train on the SBD-augmented set: ``SegmentationClassAug/*.png`` and
            ``ImageSets/Segmentation/train_aug.txt`` next to VOC's own folders.
        transform: applied to the sample dict.
    """

    def __init__(
        self, root: str | Path, split: str, aug: bool = False, transform: Callable | None = None
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; valid: train, val")
        folder = find_voc(root)
        augmented = aug and split == "train"
        sets = folder / "ImageSets" / "Segmentation"
        listing = sets / f"{'train_aug' if augmented else split}.txt"
        labels = folder / ("SegmentationClassAug" if augmented else "SegmentationClass")
        if augmented and not (listing.is_file() and labels.is_dir()):
            raise DatasetError(
                f"the SBD-augmented VOC set is not in {folder}: expected {labels}/*.png and "
                f"{listing} (mmsegmentation's layout, made by its "
                "tools/dataset_converters/voc_aug.py), or set data.aug=false"
            )
        if not listing.is_file():
            raise DatasetError(f"VOC 2012 {split} split not found: expected {listing}")
        ids = listing.read_text().split()
        what = f"VOC 2012 {split} split ({listing})"
        pairs = [(folder / "JPEGImages" / f"{i}.jpg", labels / f"{i}.png") for i in ids]
        super().__init__(check_pairs(pairs, what), None, transform)


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 segmentation, 21 classes.

    Args:
        root: where VOC 2012 is (see :class:`VOCSegmentation`), or goes with ``download``.
        aug: train on the SBD-augmented set (see :class:`VOCSegmentation`).
        download: fetch VOC 2012 (2 GB) into ``root`` if it is not there; SBD is not fetched.
        **kwargs: the crop and loader settings of :class:`SegmentationDataModule`.
    """

    num_classes = len(VOC_CLASSES)

    def __init__(
        self,
        root: str | Path,
        *,
        aug: bool = False,
        download: bool = False,
        **kwargs,
    ) -> None:
        # mmsegmentation's settings for this dataset, unless the config says otherwise.
        settings = dict(image_size=512, base_size=(2048, 512), test_size=(2048, 512))
        super().__init__(**(settings | kwargs))
        self.class_names, self.palette = list(VOC_CLASSES), voc_palette(len(VOC_CLASSES))
        self.root, self.aug, self.download = Path(root).expanduser(), aug, download

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            find_voc(self.root)
        except DatasetError:
            download(
                _ARCHIVE["url"],
                self.root,
                "VOC 2012",
                str(self.root / _ARCHIVE["base_dir"]),
                md5=_ARCHIVE["md5"],
            )

    def dataset(self, split: str, transform: Callable) -> Dataset:
        return VOCSegmentation(self.root, split, self.aug, transform)
