"""What every semantic segmentation dataset shares: image and mask transformed together, label
files paired with their images, a collate that refuses mixed sizes, and the DataModule base.

Training follows mmsegmentation's pipeline (random keep-ratio rescale, random crop, flip,
photometric distortion), in torchvision's transforms v2 on ``{"image": Image, "mask": Mask}`` so
each geometric step moves both alike. Validation keeps the mask at the label files' resolution
and resizes at most the image (``test_size``): scores are computed against the original labels,
the task upsamples its logits to them.
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from visionattn.data.datamodule import ImageDataModule, positive
from visionattn.data.download import DatasetError

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = int | Sequence[int]


def voc_palette(n: int) -> list[tuple[int, int, int]]:
    """The first ``n`` colours of PASCAL VOC's palette: class ``i``'s bits dealt out to the red,
    green and blue channels from their high bit down (1 is (128, 0, 0), 2 is (0, 128, 0), ...)."""
    palette = []
    for i in range(n):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((i >> (3 * bit + channel)) & 1) << (7 - bit)
        palette.append((rgb[0], rgb[1], rgb[2]))
    return palette


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def keep_ratio_size(size: Sequence[int], scale: Size, ratio: float = 1.0) -> list[int]:
    """``size`` (h, w) rescaled, ratio kept, as far as fits ``ratio * scale``, where ``scale`` is
    (long side, short side) whichever way the image lies: mmsegmentation's ``img_scale`` rule."""
    height, width = size
    long, short = _pair(scale)
    factor = ratio * min(long / max(height, width), short / min(height, width))
    return [int(height * factor + 0.5), int(width * factor + 0.5)]


class RandomRescale(v2.Transform):
    """Rescales image and mask (nearest) by a random ratio of ``base_size`` (see
    :func:`keep_ratio_size`), the ratio drawn uniformly from ``scale_range``."""

    def __init__(self, base_size: Size, scale_range: Sequence[float] = (0.5, 2.0)) -> None:
        super().__init__()
        self.base_size, self.scale_range = _pair(base_size), tuple(scale_range)

    def make_params(self, flat_inputs: list) -> dict:
        image = next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
        ratio = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": keep_ratio_size(F.get_size(image), self.base_size, ratio)}

    def transform(self, inpt, params: dict):
        # Masks are always resized nearest by torchvision, so labels stay labels.
        return F.resize(inpt, params["size"], antialias=True)


class ResizeImage(v2.Transform):
    """Rescales the image alone to fit ``size`` (long, short), ratio kept; the mask is left at
    the label resolution, where validation scores are computed."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.size = _pair(size)

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        return F.resize(inpt, keep_ratio_size(F.get_size(inpt), self.size), antialias=True)


def photometric_distortion() -> v2.Transform:
    """mmsegmentation's PhotoMetricDistortion in torchvision's terms: brightness, contrast,
    saturation and hue each changed with probability 1/2, the image alone. Brightness scales by
    up to 12.5% where mmseg adds up to 32 of 255; hue turns by up to 0.1 of the circle (mmseg's 18
    of OpenCV's 180)."""
    return v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(brightness=0.125)], p=0.5),
            v2.RandomApply([v2.ColorJitter(contrast=(0.5, 1.5))], p=0.5),
            v2.RandomApply([v2.ColorJitter(saturation=(0.5, 1.5))], p=0.5),
            v2.RandomApply([v2.ColorJitter(hue=0.1)], p=0.5),
        ]
    )


def _to_tensors(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """The image to float and normalised, the mask to int64 class ids, both to plain tensors."""
    return [
        v2.ToDtype(
            {tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
            scale=True,
        ),
        v2.Normalize(list(mean), list(std)),
        v2.ToPureTensor(),
    ]


def train_transform(
    image_size: Size,
    base_size: Size,
    scale_range: Sequence[float] = (0.5, 2.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Transform:
    """Random rescale, random crop to ``image_size`` (padded where smaller: image 0, mask
    ignored), horizontal flip, photometric distortion, then tensors (see :func:`_to_tensors`)."""
    return v2.Compose(
        [
            RandomRescale(base_size, scale_range),
            v2.RandomCrop(
                _pair(image_size),
                pad_if_needed=True,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX},
            ),
            v2.RandomHorizontalFlip(),
            photometric_distortion(),
            *_to_tensors(mean, std),
        ]
    )


def val_transform(
    test_size: Size | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Transform:
    """The image resized to fit ``test_size`` (long, short) if given; the mask untouched."""
    resize = [ResizeImage(test_size)] if test_size is not None else []
    return v2.Compose([*resize, *_to_tensors(mean, std)])


def collate(samples: list[dict]) -> dict:
    """``default_collate``, once it is sure the images (and the masks) are of one size: real
    datasets' validation images are not, and stacking them would fail with a bare shape error."""
    for key in ("image", "mask"):
        sizes = sorted({tuple(sample[key].shape[-2:]) for sample in samples})
        if len(sizes) > 1:
            raise ValueError(
                f"a batch of {len(samples)} samples holds {key}s of {len(sizes)} sizes "
                f"({', '.join('x'.join(map(str, s)) for s in sizes)}): the validation images of "
                "this dataset differ in size, so they go one at a time: set data.val_batch_size=1"
            )
    return default_collate(samples)


def check_pairs(pairs: Sequence[tuple[Path, Path]], what: str) -> list[tuple[Path, Path]]:
    """``pairs`` of (image, label) files, once each of them is there; ``what`` names the split
    in the error."""
    if not pairs:
        raise DatasetError(f"{what} is empty: no images found")
    for image, label in pairs:
        if not image.is_file():
            raise DatasetError(f"{what}: image {image} is missing")
        if not label.is_file():
            raise DatasetError(f"{what}: image {image} has no label file: expected {label}")
    return list(pairs)


class LabelledImages(Dataset):
    """Image files and their label PNGs, as ``{"image": uint8 Image (3, H, W), "mask": uint8
    Mask (H, W)}`` before ``transform``.

    Args:
        pairs: (image, label) paths; a label PNG holds one class index a pixel (grey or palette).
        label_map: 256 entries, the class id of each value in the label files (255 ignored), or
            None where the files hold the class ids already.
        transform: applied to the sample dict.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        label_map: NDArray[np.uint8] | None = None,
        transform: Callable | None = None,
    ) -> None:
        self.pairs, self.label_map, self.transform = list(pairs), label_map, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[index]
        with Image.open(image_path) as image:
            pixels = np.asarray(image.convert("RGB"))
        with Image.open(label_path) as label:
            # np.asarray of a palette ("P") PNG gives the indices, not the colours.
            mask = np.asarray(label)
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise DatasetError(
                f"label {label_path} is not an 8-bit one-channel PNG of class indices "
                f"(mode {label.mode}); colour-coded labels have to be converted to indices first"
            )
        if mask.shape != pixels.shape[:2]:
            raise DatasetError(
                f"image {image_path} is {pixels.shape[1]}x{pixels.shape[0]} but its label "
                f"{label_path} is {mask.shape[1]}x{mask.shape[0]}"
            )
        if self.label_map is not None:
            mask = self.label_map[mask]
        sample = {
            "image": tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1)),
            "mask": tv_tensors.Mask(torch.from_numpy(mask.copy())),
        }
        return self.transform(sample) if self.transform is not None else sample


class SegmentationDataModule(ImageDataModule):
    """Subclasses name their classes and build a split with :meth:`dataset`.

    Batches are dicts: ``image`` float32 (B, 3, H, W), normalised; ``mask`` int64 (B, H, W), the
    class ids, :data:`IGNORE_INDEX` (255) where nothing counts.

    Args:
        image_size: the training crop, a side or (h, w).
        base_size: (long, short) the random rescale is relative to (mmseg's ``img_scale``); by
            default the crop's own sides.
        scale_range: the random rescale's ratios of ``base_size``.
        test_size: (long, short) validation images are resized to fit, or None to keep them;
            masks keep the labels' resolution either way.
        batch_size: training batch size.
        val_batch_size: validation batch size; 1 where validation images differ in size.
        num_workers, seed, mean, std, loader: see :class:`ImageDataModule` (``loader``:
            pin_memory, persistent_workers, prefetch_factor).
        num_classes: only checked against the dataset's, so a config that says otherwise fails
            at once instead of training a classifier of the wrong size.
    """

    kind = "segmentation"
    ignore_index = IGNORE_INDEX
    num_classes: int
    class_names: list[str]
    palette: list[tuple[int, int, int]]

    def __init__(
        self,
        image_size: Size,
        base_size: Size | None = None,
        scale_range: Sequence[float] = (0.5, 2.0),
        test_size: Size | None = None,
        batch_size: int = 8,
        val_batch_size: int = 1,
        num_workers: int = 4,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_classes: int | None = None,
        **loader: Any,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, mean, std, **loader)
        if num_classes is not None and num_classes != self.num_classes:
            raise ValueError(
                f"data.num_classes={num_classes}, but {type(self).__name__} has "
                f"{self.num_classes} classes; set data.num_classes={self.num_classes}"
            )
        for side in _pair(image_size):
            positive("data.image_size", side)
        crop = _pair(image_size)
        self.image_size, self.test_size = image_size, test_size
        self.base_size = _pair(base_size) if base_size is not None else (max(crop), min(crop))
        self.scale_range = tuple(scale_range)
        self.val_batch_size = val_batch_size
        self.train_transform = train_transform(crop, self.base_size, scale_range, mean, std)
        self.val_transform = val_transform(test_size, mean, std)

    def dataset(self, split: str, transform: Callable) -> Dataset:
        """Split ``"train"`` or ``"val"``; a DatasetError if its files are not all there."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        # Building the splits checks their files, so a missing one fails before training starts.
        if stage in (None, "fit"):
            self.train_set = self.dataset("train", self.train_transform)
        self.val_set = self.dataset("val", self.val_transform)

    def _loader(self, dataset: Dataset, batch_size: int | None = None, **kwargs) -> DataLoader:
        return super()._loader(dataset, batch_size, collate_fn=collate, **kwargs)
