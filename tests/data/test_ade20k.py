import re
from pathlib import Path
from urllib.error import URLError

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from visionattn.data import ADE20KDataModule, ADE20KSegmentation, DatasetError
from visionattn.data import download as download_module

CONFIG = Path(__file__).parents[2] / "configs" / "data" / "ade20k.yaml"


def annotation(height: int = 20, width: int = 30) -> np.ndarray:
    """0 ("other"), the first, a middle and the last class, in stripes."""
    return np.resize(np.array([0, 1, 75, 150], dtype=np.uint8), (height, width))


def make_ade20k(root: Path) -> Path:
    folder = root / "ADEChallengeData2016"
    for split, prefix, count in (("training", "train", 3), ("validation", "val", 2)):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "annotations" / split).mkdir(parents=True)
        for i in range(1, count + 1):
            name = f"ADE_{prefix}_{i:08d}"
            size = (20, 30) if i % 2 else (30, 24)
            image = np.full((*size, 3), 30 * i, dtype=np.uint8)
            Image.fromarray(image).save(folder / "images" / split / f"{name}.jpg")
            Image.fromarray(annotation(*size)).save(folder / "annotations" / split / f"{name}.png")
    return folder


def test_root_may_be_the_challenge_folder_or_its_parent(tmp_path):
    folder = make_ade20k(tmp_path)
    for root in (tmp_path, folder):
        ds = ADE20KSegmentation(root, "train")
        assert [(i.name, label.name) for i, label in ds.pairs] == [
            (f"ADE_train_0000000{i}.jpg", f"ADE_train_0000000{i}.png") for i in (1, 2, 3)
        ]
    assert len(ADE20KSegmentation(tmp_path, "val")) == 2


def test_other_is_ignored_and_classes_shift_down_by_one(tmp_path):
    make_ade20k(tmp_path)
    mask = ADE20KSegmentation(tmp_path, "val")[0]["mask"].numpy()
    expected = np.select([annotation() == 0], [255], annotation().astype(int) - 1)
    assert mask.tolist() == expected.tolist()
    assert set(np.unique(mask).tolist()) == {0, 74, 149, 255}


def test_classes_and_the_config(tmp_path):
    cfg = OmegaConf.load(CONFIG)
    cfg.root = str(tmp_path)
    dm = hydra.utils.instantiate(cfg)
    names = dm.class_names
    assert dm.num_classes == 150 == len(names) == len(set(names)) == len(set(dm.palette))
    assert names[:5] == ["wall", "building", "sky", "floor", "tree"]
    assert names[7] == "bed" and names[12] == "person" and names[149] == "flag"
    assert all(name == name.strip() for name in names)
    assert dm.base_size == (2048, 512) and dm.test_size == [2048, 512] and dm.val_batch_size == 1
    with pytest.raises(ValueError, match=r"data\.num_classes=151, but ADE20KDataModule has 150"):
        ADE20KDataModule(tmp_path, num_classes=151)


def test_batches_follow_the_contract(tmp_path):
    make_ade20k(tmp_path)
    dm = ADE20KDataModule(
        tmp_path, image_size=16, base_size=(30, 20), test_size=None, batch_size=3, num_workers=0
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 16, 16) and batch["mask"].dtype == torch.int64
    assert set(batch["mask"].unique().tolist()) <= {0, 74, 149, 255}
    val = list(dm.val_dataloader())
    assert [v["mask"].shape for v in val] == [(1, 20, 30), (1, 30, 24)]


def test_missing_files_say_what_was_expected_where(tmp_path):
    with pytest.raises(DatasetError, match=r"ADE20K not found under .*ADEChallengeData2016"):
        ADE20KDataModule(tmp_path).setup("fit")
    folder = make_ade20k(tmp_path)
    label = folder / "annotations" / "training" / "ADE_train_00000002.png"
    label.unlink()
    message = f"ADE_train_00000002.jpg has no label file: expected {label}"
    with pytest.raises(DatasetError, match=re.escape(message)):
        ADE20KSegmentation(tmp_path, "train")
    for image in (folder / "images" / "validation").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match="ADE20K val split is empty"):
        ADE20KSegmentation(tmp_path, "val")


def test_download_offline_says_which_file_to_fetch_and_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(download_module, "download_and_extract_archive", offline)
    with pytest.raises(
        DatasetError, match=r"could not download ADE20K .*ADEChallengeData2016\.zip.* into"
    ):
        ADE20KDataModule(tmp_path, download=True).prepare_data()
