import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from visionattn.data.segmentation import (
    DatasetError,
    LabelledImages,
    RandomRescale,
    SegmentationDataModule,
    collate,
    keep_ratio_size,
    train_transform,
    val_transform,
    voc_palette,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def sample(height: int = 20, width: int = 30, classes: int = 5) -> dict:
    """A grey image whose brightness encodes the label of each pixel: 10 + 50 * label."""
    generator = torch.Generator().manual_seed(height * width)
    mask = torch.randint(classes, (height, width), generator=generator, dtype=torch.uint8)
    image = (10 + 50 * mask).expand(3, height, width)
    return {"image": tv_tensors.Image(image.clone()), "mask": tv_tensors.Mask(mask)}


def test_voc_palette_is_the_standard_one():
    palette = voc_palette(256)
    assert palette[:5] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert palette[15] == (192, 128, 128)  # person
    assert palette[20] == (0, 64, 128)  # tvmonitor
    assert len(set(palette)) == 256


def test_keep_ratio_size_fits_long_and_short_sides_whichever_way_the_image_lies():
    assert keep_ratio_size((375, 500), (2048, 512)) == [512, 683]
    assert keep_ratio_size((500, 375), (2048, 512)) == [683, 512]
    assert keep_ratio_size((1024, 2048), (2048, 1024), ratio=0.5) == [512, 1024]


def test_random_rescale_moves_image_and_mask_together_and_keeps_labels():
    torch.manual_seed(0)
    data = sample()
    exact = RandomRescale((60, 40), (1.0, 1.0))(data)
    assert exact["image"].shape == (3, 40, 60) and exact["mask"].shape == (40, 60)
    sizes = set()
    for _ in range(20):
        out = RandomRescale((60, 40), (0.5, 2.0))(data)
        assert out["image"].shape[-2:] == out["mask"].shape
        # Nearest resizing: no label appears that was not there.
        assert set(out["mask"].unique().tolist()) <= set(range(5))
        sizes.add(tuple(out["mask"].shape))
        height, width = out["mask"].shape
        assert 20 <= height <= 80 and abs(width - 1.5 * height) <= 1  # ratio kept
    assert len(sizes) > 5


def test_train_transform_crops_pads_with_ignore_and_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    # No rescale (ratio 1 of the image's own size), a crop larger than the image: padding.
    transform = train_transform((32, 40), (30, 20), (1.0, 1.0), MEAN, STD)
    flips = set()
    for _ in range(10):
        out = transform(sample())
        image, mask = out["image"], out["mask"]
        assert type(image) is torch.Tensor and type(mask) is torch.Tensor
        assert image.shape == (3, 32, 40) and image.dtype == torch.float32
        assert mask.shape == (32, 40) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
        assert (mask == 255).sum() == 32 * 40 - 20 * 30
        # Photometric changes of a grey image are monotone: if mask and image moved together,
        # each label still has one brightness and they keep their order.
        values = [image[0][mask == label] for label in range(5)]
        assert all(v.numel() and v.min() == v.max() for v in values)
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(values))
        rows, cols = torch.nonzero(mask != 255, as_tuple=True)
        inside = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        flips.add(torch.equal(inside, sample()["mask"].long()))
    assert flips == {True, False}  # flipped some of the time, identical otherwise


def test_train_transform_crops_a_larger_image_to_size():
    torch.manual_seed(0)
    out = train_transform(16, 30, (1.0, 1.0), MEAN, STD)(sample())
    assert out["image"].shape == (3, 16, 16) and out["mask"].shape == (16, 16)
    assert 255 not in out["mask"]


def test_val_transform_resizes_the_image_alone_and_normalises_it():
    data = sample()
    out = val_transform((60, 40), MEAN, STD)(data)
    assert out["image"].shape == (3, 40, 60)
    assert torch.equal(out["mask"], data["mask"].long())
    plain = val_transform(None, MEAN, STD)(data)
    torch.testing.assert_close(plain["image"], (data["image"].float() / 255 - 0.5) / 0.25)


def test_collate_stacks_one_size_and_names_the_setting_for_mixed_sizes():
    transform = val_transform(None, MEAN, STD)
    batch = collate([transform(sample()), transform(sample())])
    assert batch["image"].shape == (2, 3, 20, 30) and batch["mask"].shape == (2, 20, 30)
    with pytest.raises(ValueError, match=r"set data\.val_batch_size=1"):
        collate([transform(sample()), transform(sample(24, 18))])


def write(tmp_path, image: np.ndarray, label: np.ndarray, mode: str = "L"):
    image_path, label_path = tmp_path / "a.png", tmp_path / "a_label.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(label).convert(mode).save(label_path)
    return image_path, label_path


def test_labelled_images_maps_labels_and_rejects_malformed_ones(tmp_path):
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    label = np.arange(24, dtype=np.uint8).reshape(4, 6)
    lut = np.full(256, 255, dtype=np.uint8)
    lut[3] = 1
    out = LabelledImages([write(tmp_path, image, label)], lut)[0]
    assert out["image"].shape == (3, 4, 6) and isinstance(out["mask"], tv_tensors.Mask)
    assert out["mask"].tolist() == np.where(label == 3, 1, 255).tolist()

    with pytest.raises(DatasetError, match="not an 8-bit one-channel PNG"):
        LabelledImages([write(tmp_path, image, label, mode="RGB")])[0]
    small = np.zeros((4, 5), dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"is 6x4 but its label .* is 5x4"):
        LabelledImages([write(tmp_path, image, small)])[0]


class Two(SegmentationDataModule):
    num_classes = 2


def test_num_classes_is_checked_against_the_dataset():
    assert Two(16, num_classes=2).num_classes == 2
    with pytest.raises(ValueError, match=r"data\.num_classes=3, but Two has 2 classes"):
        Two(16, num_classes=3)
