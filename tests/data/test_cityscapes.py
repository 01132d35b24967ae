import re
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from visionattn.data import CityscapesDataModule, CityscapesSegmentation, DatasetError

CONFIG = Path(__file__).parents[2] / "configs" / "data" / "cityscapes.yaml"
# label id -> train id, from the Cityscapes paper's table (not from the code under test).
KNOWN = {7: 0, 8: 1, 11: 2, 23: 10, 24: 11, 26: 13, 33: 18, 0: 255, 1: 255, 9: 255, 29: 255}


def label_ids(height: int = 20, width: int = 30, shift: int = 0) -> np.ndarray:
    ids = np.array(list(KNOWN), dtype=np.uint8)
    return np.roll(np.resize(ids, height * width), shift).reshape(height, width)


def make_cityscapes(root: Path) -> None:
    """Two train cities (one image each) and one val city with two images, 20x30."""
    files = {"train": ["aachen_000000_000019", "bochum_000000_000313"]}
    files["val"] = ["frankfurt_000000_000294", "frankfurt_000000_000576"]
    for split, names in files.items():
        for i, name in enumerate(names):
            city = name.split("_")[0]
            images, labels = (root / d / split / city for d in ("leftImg8bit", "gtFine"))
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            image = np.full((20, 30, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(image).save(images / f"{name}_leftImg8bit.png")
            Image.fromarray(label_ids(shift=i)).save(labels / f"{name}_gtFine_labelIds.png")
            # The other gtFine files, which must not be taken for labels.
            Image.fromarray(np.zeros((20, 30), np.uint8)).save(
                labels / f"{name}_gtFine_instanceIds.png"
            )


def test_images_pair_with_their_label_ids_across_cities(tmp_path):
    make_cityscapes(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "train")
    assert [(i.parent.name, label.name) for i, label in ds.pairs] == [
        ("aachen", "aachen_000000_000019_gtFine_labelIds.png"),
        ("bochum", "bochum_000000_000313_gtFine_labelIds.png"),
    ]


def test_label_ids_map_to_the_19_train_ids_pixel_by_pixel(tmp_path):
    make_cityscapes(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "val")
    for i in range(2):
        expected = np.vectorize(KNOWN.get)(label_ids(shift=i))
        assert ds[i]["mask"].numpy().tolist() == expected.tolist()


def test_classes_palette_and_the_config(tmp_path):
    cfg = OmegaConf.load(CONFIG)
    cfg.root = str(tmp_path)
    dm = hydra.utils.instantiate(cfg)
    assert dm.num_classes == 19 == len(dm.class_names) == len(dm.palette)
    assert dm.class_names[:3] == ["road", "sidewalk", "building"]
    assert dm.class_names[13] == "car" and dm.class_names[18] == "bicycle"
    assert dm.palette[0] == (128, 64, 128) and dm.palette[13] == (0, 0, 142)
    assert dm.image_size == [512, 1024] and dm.base_size == (2048, 1024)
    assert dm.test_size is None and dm.val_batch_size == 1
    with pytest.raises(ValueError, match=r"data\.num_classes=21, but CityscapesDataModule has 19"):
        CityscapesDataModule(tmp_path, num_classes=21)


def test_batches_follow_the_contract(tmp_path):
    make_cityscapes(tmp_path)
    dm = CityscapesDataModule(
        tmp_path, image_size=(16, 24), base_size=(30, 20), batch_size=2, num_workers=0
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 24) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 16, 24) and batch["mask"].dtype == torch.int64
    assert set(batch["mask"].unique().tolist()) <= set(KNOWN.values())
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 3, 20, 30) and val["mask"].shape == (1, 20, 30)


def test_missing_files_say_what_was_expected_where_and_that_there_is_no_download(tmp_path):
    with pytest.raises(DatasetError, match=r"Cityscapes not found .*leftImg8bit/train/<city>"):
        CityscapesSegmentation(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"needs a login.*gtFine_trainvaltest\.zip"):
        CityscapesDataModule(tmp_path, download=True).prepare_data()
    make_cityscapes(tmp_path)
    label = tmp_path / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png"
    label.unlink()
    message = f"bochum_000000_000313_leftImg8bit.png has no label file: expected {label}"
    with pytest.raises(DatasetError, match=re.escape(message)):
        CityscapesSegmentation(tmp_path, "train")
    for image in (tmp_path / "leftImg8bit" / "val").glob("*/*.png"):
        image.unlink()
    with pytest.raises(DatasetError, match="Cityscapes val split is empty"):
        CityscapesDataModule(tmp_path).setup("validate")
