import hashlib
import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from tests.data.test_imagefolder import COLOURS
from visionattn.data import CIFAR10DataModule, CIFAR100DataModule, DatasetError
from visionattn.data import download as download_module


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_cifar(root, monkeypatch, dataset=CIFAR10, per_batch=12, num_classes=5, seed=0):
    """The python batch format (``data`` uint8 N x 3072 as R, G, B planes of 32 x 32; the labels
    under ``labels`` or ``fine_labels``; the class names in the meta file) under
    ``root/<base_folder>``, class ``i`` coloured ``COLOURS[i]``. torchvision checks the files
    against the official MD5s: they are swapped for these files' own, as a real copy matches the
    real ones."""
    rng = np.random.default_rng(seed)
    folder = root / dataset.base_folder
    folder.mkdir(parents=True)
    cifar100 = dataset is CIFAR100
    label_key = "fine_labels" if cifar100 else "labels"
    names = [f"class{i}" for i in range(num_classes)]
    listed = {}
    for name, _ in dataset.train_list + dataset.test_list:
        labels = rng.integers(0, num_classes, per_batch)
        pixels = np.array([COLOURS[label] for label in labels], dtype=np.int64)[:, :, None]
        noise = rng.integers(-20, 21, (per_batch, 3, 1024))
        data = np.clip(pixels + noise, 0, 255).astype(np.uint8).reshape(per_batch, 3072)
        entry = {"data": data, label_key: labels.tolist(), "filenames": [b"x.png"] * per_batch}
        if cifar100:
            entry["coarse_labels"] = [0] * per_batch
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f)
        listed[name] = labels
    meta = dataset.meta
    with (folder / meta["filename"]).open("wb") as f:
        pickle.dump({meta["key"]: names}, f)
    monkeypatch.setattr(
        dataset, "train_list", [[n, _md5(folder / n)] for n, _ in dataset.train_list]
    )
    monkeypatch.setattr(dataset, "test_list", [[n, _md5(folder / n)] for n, _ in dataset.test_list])
    monkeypatch.setattr(dataset, "meta", {**meta, "md5": _md5(folder / meta["filename"])})
    return listed, names


def colour_of(image: torch.Tensor, data) -> int:
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    rgb = ((image * std + mean) * 255).mean((1, 2))
    return int(torch.cdist(rgb[None], torch.tensor(COLOURS, dtype=torch.float))[0].argmin())


@pytest.mark.parametrize("module", [CIFAR10DataModule, CIFAR100DataModule])
def test_batches_read_with_their_labels_and_class_names(tmp_path, monkeypatch, module):
    listed, names = make_cifar(tmp_path, monkeypatch, module.dataset)
    data = module(tmp_path, batch_size=8, num_workers=0)
    data.setup("fit")
    assert data.classes == names and data.num_classes == 5
    assert len(data.train_set) == 12 * len(module.dataset.train_list)
    test_labels = listed[module.dataset.test_list[0][0]]
    assert [sample["label"] for sample in data.val_set] == test_labels.tolist()
    for sample in data.val_set:  # validation is the whole 32 px image: its colour is its class
        assert sample["image"].shape == (3, 32, 32)
        assert colour_of(sample["image"], data) == sample["label"]
    # The root may also name the batches folder itself.
    inside = module(tmp_path / module.dataset.base_folder, num_workers=0)
    inside.setup("validate")
    assert len(inside.val_set) == 12


def test_training_crops_are_padded_and_augmented_by_timm(tmp_path, monkeypatch):
    make_cifar(tmp_path, monkeypatch)
    data = CIFAR10DataModule(tmp_path, num_workers=0, augment={"auto_augment": "rand-m9-n2"})
    names = [type(t).__name__ for t in data.train_transform.transforms]
    assert names[:3] == ["RandomCrop", "RandomHorizontalFlip", "RandAugment"]
    assert data.train_transform.transforms[0].padding == 4
    data.setup("fit")
    assert data.train_set[0]["image"].shape == (3, 32, 32)


def test_missing_and_altered_files_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"data_batch_1 is missing.*data.download=true.*kriz"):
        CIFAR10DataModule(tmp_path).setup("fit")
    make_cifar(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"altered")
    with pytest.raises(DatasetError, match="test_batch is not CIFAR-10's official file"):
        CIFAR10DataModule(tmp_path).setup("fit")


def test_offline_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(download_module, "download_and_extract_archive", offline)
    data = CIFAR100DataModule(tmp_path / "data", download=True)
    with pytest.raises(DatasetError) as error:
        data.prepare_data()
    message = str(error.value)
    assert "cifar-100-python.tar.gz" in message and str(tmp_path / "data") in message
    assert "cifar-100-python exists" in message
