"""Any image classification tree of class folders, ImageNet's included: ``root/train/<class>/*``
and ``root/val/<class>/*``.

The classes are the training split's folders in sorted order, as torchvision's ImageFolder has
them; once a checkpoint exists its class list wins, so a validation tree that lacks a class, or
lists them in another order, still labels every image the way the model learned it.
"""

import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from visionattn.data.classification import ClassificationDataModule, ImageFiles, class_indices
from visionattn.data.download import DatasetError

log = logging.getLogger(__name__)
_warned_empty: set[str] = set()


def class_folders(folder: Path) -> list[str]:
    """The class folders of one split, sorted; a DatasetError where there are none."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} does not exist: expected a folder of class folders there")
    try:
        classes, _ = find_classes(folder)
    except FileNotFoundError:
        raise DatasetError(
            f"{folder} has no class folders: expected {folder}/<class>/<image> (ImageNet's "
            "validation images come in one folder and have to be sorted into class folders "
            "first)"
        ) from None
    return classes


def folder_samples(folder: Path, classes: Sequence[str]) -> list[tuple[str, int]]:
    """(path, index in ``classes``) of every image in ``folder``'s class folders, in sorted
    order; a DatasetError for a class folder ``classes`` lacks, or no image at all."""
    folders = class_folders(folder)
    indices = dict(zip(folders, class_indices(folders, classes, str(folder)), strict=True))
    samples = make_dataset(folder, indices, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DatasetError(f"{folder} has class folders but no images ({' '.join(IMG_EXTENSIONS)})")
    filled = {label for _, label in samples}
    empty = [name for name in folders if indices[name] not in filled]
    if empty and str(folder) not in _warned_empty:  # once, though the trainer builds it again
        _warned_empty.add(str(folder))
        log.warning(
            "%s: %d class folder%s without images (%s): the model learns %s class%s it never sees",
            folder, len(empty), "s" * (len(empty) > 1), ", ".join(empty[:5]),
            "a" if len(empty) == 1 else "", "es" * (len(empty) > 1),
        )  # fmt: skip
    return samples


def typical_side(samples: Sequence[tuple[str, int]], count: int = 16) -> int | None:
    """The median shorter side of up to ``count`` images spread over ``samples`` (headers only)."""
    sides = []
    for path, _ in samples[:: max(1, len(samples) // count)][:count]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except OSError:
            continue  # unreadable: reported when the loader reaches it
    return int(statistics.median(sides)) if sides else None


class ImageFolderDataModule(ClassificationDataModule):
    """A tree of class folders: ``root/<train_dir>/<class>/*.jpg`` and ``root/<val_dir>/...``,
    any of torchvision's image extensions.

    Args:
        root: the folder holding the splits.
        train_dir, val_dir: the splits' folders inside ``root``.
        download: ImageFolder trees have no download; True fails with a message that says so.
        **kwargs: see :class:`ClassificationDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        train_dir: str = "train",
        val_dir: str = "val",
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.train_dir, self.val_dir, self.download = train_dir, val_dir, download

    def prepare_data(self) -> None:
        if self.download:
            raise DatasetError(
                f"an image folder tree cannot be downloaded: put it at {self.root} as "
                f"{self.train_dir}/<class>/<image> and {self.val_dir}/<class>/<image> (ImageNet: "
                "from https://image-net.org, with its validation images sorted into class "
                "folders), and set data.download=false"
            )

    def setup(self, stage: str | None = None) -> None:
        train = self.root / self.train_dir
        if self.classes is None:
            self.set_classes(class_folders(train), str(train))
        if stage in (None, "fit"):
            self.train_set = self.split(train, self.train_transform)
            self.hint_small_images(train)
        self.val_set = self.split(self.root / self.val_dir, self.val_transform)

    _hinted = False

    def hint_small_images(self, train: Path) -> None:
        """Say once when the images are much smaller than ``image_size``: every one is upsampled,
        and the run pays for pixels the data does not have (32 px images at 224 px: 49 times)."""
        side = typical_side(self.train_set.samples)
        if self._hinted or side is None or side * 2 > self.image_size:
            return
        self._hinted = True
        log.warning(
            "the images in %s are about %d px, much smaller than data.image_size=%d: each is "
            "upsampled, at %.0f times the compute of its own size; data.image_size=%d trains on "
            "them as they are",
            train, side, self.image_size, (self.image_size / side) ** 2, side,
        )  # fmt: skip

    def split(self, folder: Path, transform: Callable) -> ImageFiles:
        """The images of ``folder``, labelled by the class list."""
        assert self.classes is not None
        return ImageFiles(folder_samples(folder, self.classes), transform, self.strict)
