from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from visionattn.data import ShapesSegmentationDataModule

CONFIG = Path(__file__).parents[2] / "configs" / "data" / "shapes_segmentation.yaml"


def make(**kwargs) -> ShapesSegmentationDataModule:
    defaults = dict(image_size=32, num_classes=4, train_size=16, val_size=8, batch_size=4)
    dm = ShapesSegmentationDataModule(**{**defaults, **kwargs})
    dm.setup("fit")
    return dm


def test_val_batches_are_the_rendered_masks_as_class_ids():
    dm = make()
    batch = next(iter(dm.val_dataloader()))
    image, mask = batch["image"], batch["mask"]
    assert image.shape == (4, 3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (4, 32, 32) and mask.dtype == torch.int64
    for i in range(4):
        raw_image, raw_mask = dm.val_set.render(i)
        torch.testing.assert_close(image[i], (raw_image.float() / 255 - 0.5) / 0.25)
        assert torch.equal(mask[i], raw_mask.long())
        # Shape i is class i % 3 of the shapes, i.e. i % 3 + 1 after the background.
        assert set(mask[i].unique().tolist()) == {0, i % 3 + 1}


def test_train_batches_are_augmented_crops_with_each_shapes_class():
    torch.manual_seed(0)
    dm = make()
    for batch in dm.train_dataloader():
        assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == torch.int64
        for mask, label in zip(batch["mask"], batch["label"], strict=True):
            assert set(mask.unique().tolist()) <= {0, label.item() + 1, 255}


def test_classes_and_their_limits():
    dm = make()
    assert dm.num_classes == 4 and dm.class_names == ["background", "circle", "ring", "square"]
    assert len(dm.palette) == 4 and dm.ignore_index == 255 and dm.val_batch_size == 4
    assert dm.kind == "segmentation"  # what the tasks check
    for wrong in (2, 12):
        with pytest.raises(ValueError, match="counts the background and the shapes: 3 to 11"):
            ShapesSegmentationDataModule(num_classes=wrong)


def test_the_config_builds_the_default():
    dm = hydra.utils.instantiate(OmegaConf.load(CONFIG))
    assert isinstance(dm, ShapesSegmentationDataModule)
    assert dm.num_classes == 11 and dm.image_size == 64 and dm.class_names[-1] == "pair"
    assert dm.mean == (0.5, 0.5, 0.5) and dm.std == (0.25, 0.25, 0.25)
