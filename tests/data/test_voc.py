import re
from pathlib import Path
from urllib.error import URLError

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from visionattn.data import DatasetError, VOCDataModule, VOCSegmentation, voc_palette
from visionattn.data import download as download_module

CONFIG = Path(__file__).parents[2] / "configs" / "data" / "voc.yaml"


def voc_label(height: int, width: int, cls: int) -> np.ndarray:
    """Background, an object of class ``cls`` on the right, and VOC's 255 border around it."""
    label = np.zeros((height, width), dtype=np.uint8)
    label[:, width // 2 :] = 255
    label[1:-1, width // 2 + 1 : -1] = cls
    return label


def write_sample(folder: Path, labels: str, name: str, size: tuple[int, int], cls: int) -> None:
    height, width = size
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(
        folder / "JPEGImages" / f"{name}.jpg"
    )
    label = Image.fromarray(voc_label(height, width, cls)).convert("P")
    label.putpalette([c for rgb in voc_palette(256) for c in rgb])
    label.save(folder / labels / f"{name}.png")


def make_voc(root: Path, aug: bool = False) -> Path:
    """VOCdevkit/VOC2012 under ``root``: 3 train images (20x30), 2 val images of two sizes."""
    folder = root / "VOCdevkit" / "VOC2012"
    sets = folder / "ImageSets" / "Segmentation"
    for sub in ("JPEGImages", "SegmentationClass", sets.relative_to(folder)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    train, val = ["2007_000032", "2007_000033", "2007_000039"], ["2007_000042", "2007_000061"]
    for i, name in enumerate(train):
        write_sample(folder, "SegmentationClass", name, (20, 30), cls=i + 1)
    write_sample(folder, "SegmentationClass", val[0], (20, 30), cls=15)
    write_sample(folder, "SegmentationClass", val[1], (24, 18), cls=20)
    (sets / "train.txt").write_text("\n".join(train) + "\n")
    (sets / "val.txt").write_text("\n".join(val) + "\n")
    if aug:
        (folder / "SegmentationClassAug").mkdir()
        for name in [*train, "2008_000002"]:
            if name not in train:
                Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(
                    folder / "JPEGImages" / f"{name}.jpg"
                )
            # mmseg's augmented labels are plain index PNGs, not palette ones.
            Image.fromarray(voc_label(20, 30, 7)).save(
                folder / "SegmentationClassAug" / f"{name}.png"
            )
        (sets / "train_aug.txt").write_text("\n".join([*train, "2008_000002"]))
    return folder


def test_root_may_be_voc2012_vocdevkit_or_their_parent(tmp_path):
    folder = make_voc(tmp_path)
    for root in (tmp_path, tmp_path / "VOCdevkit", folder):
        ds = VOCSegmentation(root, "val")
        assert [image.name for image, _ in ds.pairs] == ["2007_000042.jpg", "2007_000061.jpg"]
        assert [label.parent.name for _, label in ds.pairs] == ["SegmentationClass"] * 2


def test_palette_labels_read_as_class_indices_with_the_border_ignored(tmp_path):
    make_voc(tmp_path)
    sample = VOCSegmentation(tmp_path, "val")[0]
    assert sample["image"].shape == (3, 20, 30)
    assert sample["mask"].numpy().tolist() == voc_label(20, 30, 15).tolist()


def test_aug_trains_on_sbd_labels_and_validates_on_voc(tmp_path):
    make_voc(tmp_path, aug=True)
    train = VOCSegmentation(tmp_path, "train", aug=True)
    assert len(train) == 4 and {label.parent.name for _, label in train.pairs} == {
        "SegmentationClassAug"
    }
    assert set(train[3]["mask"].unique().tolist()) == {0, 7, 255}
    assert VOCSegmentation(tmp_path, "val", aug=True).pairs[0][1].parent.name == "SegmentationClass"


def test_missing_folders_and_files_say_what_was_expected_where(tmp_path):
    with pytest.raises(DatasetError, match=r"VOC 2012 not found under .*VOCdevkit/VOC2012.*"):
        VOCSegmentation(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"data\.download=true"):
        VOCSegmentation(tmp_path, "train")
    folder = make_voc(tmp_path)
    with pytest.raises(DatasetError, match=r"SBD-augmented .* or set data\.aug=false"):
        VOCSegmentation(tmp_path, "train", aug=True)
    label = folder / "SegmentationClass" / "2007_000033.png"
    label.unlink()
    message = f"2007_000033.jpg has no label file: expected {label}"
    with pytest.raises(DatasetError, match=re.escape(message)):
        VOCSegmentation(tmp_path, "train")
    (folder / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"val split .* is empty"):
        VOCSegmentation(tmp_path, "val")


def make_datamodule(root: Path, **kwargs) -> VOCDataModule:
    defaults = dict(image_size=16, base_size=(30, 20), batch_size=2, num_workers=0)
    return VOCDataModule(root, **{**defaults, **kwargs})


def test_batches_follow_the_contract(tmp_path):
    make_voc(tmp_path)
    dm = make_datamodule(tmp_path, test_size=(60, 40))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 16, 16) and batch["mask"].dtype == torch.int64
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 2, 3, 255}
    val = list(dm.val_dataloader())
    # The image resized to fit test_size, the mask at the label's own resolution.
    assert val[0]["image"].shape == (1, 3, 40, 60) and val[0]["mask"].shape == (1, 20, 30)
    assert val[1]["image"].shape == (1, 3, 53, 40) and val[1]["mask"].shape == (1, 24, 18)
    assert set(val[1]["mask"].unique().tolist()) == {0, 20, 255}


def test_val_batches_of_mixed_sizes_name_the_setting(tmp_path):
    make_voc(tmp_path)
    dm = make_datamodule(tmp_path, val_batch_size=2)
    dm.setup("validate")
    with pytest.raises(ValueError, match=r"data\.val_batch_size=1"):
        next(iter(dm.val_dataloader()))


def test_classes_and_the_config(tmp_path):
    cfg = OmegaConf.load(CONFIG)
    cfg.root = str(tmp_path)
    dm = hydra.utils.instantiate(cfg)
    assert dm.num_classes == 21 == len(dm.class_names) == len(dm.palette)
    assert dm.class_names[0] == "background" and dm.class_names[15] == "person"
    assert dm.palette[15] == (192, 128, 128) and dm.ignore_index == 255
    assert dm.image_size == 512 and dm.base_size == (2048, 512) and dm.val_batch_size == 1
    assert dm.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match=r"data\.num_classes=20, but VOCDataModule has 21"):
        VOCDataModule(tmp_path, num_classes=20)
    with pytest.raises(DatasetError, match="VOC 2012 not found"):
        dm.setup("fit")  # the check comes before training


def test_download_offline_says_which_file_to_fetch_and_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(download_module, "download_and_extract_archive", offline)
    dm = make_datamodule(tmp_path / "data", download=True)
    with pytest.raises(
        DatasetError, match=r"could not download VOC 2012 .*VOCtrainval_11-May-2012\.tar.* into"
    ):
        dm.prepare_data()


def test_download_extracts_into_root(tmp_path, monkeypatch):
    calls = []

    def fake(url, download_root, **kwargs):
        calls.append(url)
        make_voc(Path(download_root))

    monkeypatch.setattr(download_module, "download_and_extract_archive", fake)
    dm = make_datamodule(tmp_path, download=True)
    dm.prepare_data()
    dm.prepare_data()  # found now: not fetched again
    dm.setup("fit")
    assert len(calls) == 1 and len(dm.train_set) == 3
