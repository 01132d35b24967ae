"""What every image classification dataset shares: timm's transforms built from the config,
images that turn out unreadable hours in, and the class list that travels in the checkpoint.

An unreadable image (truncated, not an image, a decompression bomb) is named in a warning and left
out of its batch; the batches carry the names under ``skipped`` and the datamodule counts them
per epoch, for :class:`~visionattn.callbacks.SkippedImages` to report. With ``strict`` the first
one raises :class:`UnreadableImage` instead.
"""

import io
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms

from visionattn.data.datamodule import ImageDataModule, positive
from visionattn.data.download import DatasetError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What PIL raises on a file it cannot decode: UnidentifiedImageError and "image file is
# truncated" are OSErrors; some broken headers raise ValueError or SyntaxError.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImage(DatasetError):
    """An image file that does not decode, in strict mode."""


def decode_image(source: str | Path | bytes, name: str, strict: bool = False) -> Image.Image | None:
    """The RGB image in ``source`` (a path or the file's bytes); None, after a warning naming
    ``name``, where it does not decode, or :class:`UnreadableImage` with ``strict``."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.convert("RGB")
    except _DECODE_ERRORS as err:
        message = f"unreadable image {name} ({type(err).__name__}: {err})"
        if strict:
            raise UnreadableImage(
                f"{message}; replace or remove it, or set data.strict=false to skip unreadable "
                "images with a warning"
            ) from None
        log.warning("%s: skipped", message)
        return None


def class_indices(names: Sequence[str], classes: Sequence[str], where: str) -> list[int]:
    """The index in ``classes`` of each class name found in ``where``; a DatasetError naming
    those ``classes`` lacks."""
    unknown = [name for name in names if name not in classes]
    if unknown:
        listed = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise DatasetError(
            f"{where} has classes that are not among the {len(classes)} classes ({listed}): "
            f"{', '.join(unknown)}"
        )
    index = {name: i for i, name in enumerate(classes)}
    return [index[name] for name in names]


def labelled(image: Image.Image | None, label: int, name: str, transform: Callable) -> dict:
    """A sample: ``{"image": transform(image), "label": label}``, or ``{"skipped": name}``."""
    if image is None:
        return {"skipped": name}
    return {"image": transform(image), "label": label}


def collate(samples: list[dict]) -> dict:
    """Stacks the readable samples; the names of the others go under ``skipped``."""
    skipped = [sample["skipped"] for sample in samples if "skipped" in sample]
    kept = [sample for sample in samples if "skipped" not in sample]
    if not kept:
        raise DatasetError(
            f"no image of a batch of {len(samples)} decodes ({', '.join(skipped[:3])}, ...): "
            "check the files are images of a format PIL reads"
        )
    batch = default_collate(kept)
    if skipped:
        batch["skipped"] = skipped
    return batch


class ImageFiles(Dataset):
    """(path, label) pairs read with :func:`decode_image` into samples of :func:`labelled`."""

    def __init__(
        self, samples: Sequence[tuple[str, int]], transform: Callable, strict: bool = False
    ) -> None:
        self.samples, self.transform, self.strict = list(samples), transform, strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        return labelled(decode_image(path, path, self.strict), label, path, self.transform)


class ImageLabelPairs(Dataset):
    """A torchvision dataset of (PIL image, label) pairs as samples of :func:`labelled`."""

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, label = self.dataset[index]
        return labelled(image.convert("RGB"), int(label), str(index), self.transform)


def train_transform(
    image_size: int,
    augment: dict,
    crop_padding: int | None,
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> Callable:
    """timm's training transform (``create_transform(is_training=True, **augment)``: random
    resized crop, flip, colour jitter, RandAugment or AutoAugment, random erasing); with
    ``crop_padding``, CIFAR's crop instead of the resized one: pad by that much, crop at random."""
    kwargs = dict(interpolation=interpolation, mean=tuple(mean), std=tuple(std), **augment)
    if crop_padding is None:
        return create_transform(image_size, is_training=True, **kwargs)
    _, secondary, final = create_transform(image_size, is_training=True, separate=True, **kwargs)
    primary = [
        transforms.RandomCrop(image_size, padding=crop_padding, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(augment.get("hflip", 0.5)),
    ]
    return transforms.Compose([*primary, *secondary.transforms, *final.transforms])


class ClassificationDataModule(ImageDataModule):
    """Subclasses set ``classes`` and build ``train_set`` and ``val_set`` in ``setup`` from
    ``train_transform`` and ``val_transform``, as datasets of :func:`labelled` samples.

    The class list is part of the datamodule's state, saved in every checkpoint: a resumed run and
    eval.py give each class name the index the model was trained with, whatever folders the data
    has then (see :meth:`load_state_dict`).

    Args:
        image_size: side of the square crop the model sees.
        augment: arguments of ``timm.data.create_transform`` for training (``auto_augment``,
            ``re_prob``, ``color_jitter``, ``scale``, ``hflip``, ...).
        crop_padding: train on random crops of the image padded by this much (CIFAR), not timm's
            random resized crops.
        interpolation: of every resize, timm's names ("bilinear", "bicubic", ...).
        crop_pct: validation resizes to ``image_size / crop_pct`` and centre-crops.
        strict: raise on the first unreadable image instead of skipping it with a warning.
        num_classes: only checked against the data's, so a config that says otherwise fails
            before training a classifier of the wrong size.
        batch_size, num_workers, seed, mean, std, loader: see :class:`ImageDataModule`
            (``loader``: pin_memory, persistent_workers, prefetch_factor).
    """

    classes: list[str] | None = None

    def __init__(
        self,
        image_size: int = 224,
        augment: dict | None = None,
        crop_padding: int | None = None,
        interpolation: str = "bilinear",
        crop_pct: float = 0.875,
        strict: bool = False,
        num_classes: int | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **loader: Any,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, mean, std, **loader)
        self.image_size = positive("data.image_size", image_size)
        self.strict, self.expected_classes = strict, num_classes
        self.train_transform = train_transform(
            image_size, augment or {}, crop_padding, interpolation, mean, std
        )
        self.val_transform = create_transform(
            image_size,
            interpolation=interpolation,
            crop_pct=crop_pct,
            mean=tuple(mean),
            std=tuple(std),
        )
        self.skipped: Counter[str] = Counter()

    @property
    def num_classes(self) -> int:
        if self.classes is None:
            raise RuntimeError("the classes are known once setup() has run")
        return len(self.classes)

    def set_classes(self, classes: Sequence[str], where: str) -> None:
        """Fixes the class list, found in ``where``; fails if the config expects another count."""
        if self.expected_classes is not None and len(classes) != self.expected_classes:
            raise DatasetError(
                f"{where} has {len(classes)} classes ({', '.join(list(classes)[:5])}"
                f"{', ...' if len(classes) > 5 else ''}), but data.num_classes="
                f"{self.expected_classes}: set data.num_classes={len(classes)}"
            )
        self.classes = list(classes)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "classes": self.classes}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores the class list the checkpoint was trained with; the splits already built are
        built again, so their labels follow it."""
        super().load_state_dict(state_dict)
        classes = state_dict.get("classes")
        if classes is not None and classes != self.classes:
            built = hasattr(self, "val_set")
            self.classes = list(classes)
            if built:
                self.setup("fit" if hasattr(self, "train_set") else "validate")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # In the training process, whatever the number of workers: count what they skipped.
        if isinstance(batch, dict) and "skipped" in batch:
            stage = "train" if self.trainer is not None and self.trainer.training else "val"
            self.skipped[stage] += len(batch.pop("skipped"))
        return batch

    def _loader(self, dataset: Dataset, batch_size: int | None = None, **kwargs) -> DataLoader:
        return super()._loader(dataset, batch_size, collate_fn=collate, **kwargs)
