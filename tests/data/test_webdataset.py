"""WebDataset shards: the writer keeps every image's bytes and class, and the datamodule reads them
back once each in validation, deals disjoint shards to every worker of every rank with equal
epochs, reshuffles by (seed, epoch), skips corrupt images by name and maps classes by name."""

import json
import logging
import random
import re
import shutil
import subprocess
import sys
import tarfile
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from webdataset import TarWriter

from visionattn.data import DatasetError, UnreadableImage
from visionattn.data import webdataset as shards_module
from visionattn.data.webdataset import WebDatasetDataModule, shuffled
from visionattn.data.write_shards import main, write_shards

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "data" / "webdataset.yaml"
CLASSES = ["cat", "dog", "owl"]
TRAIN = {"cat": 6, "dog": 5, "owl": 5}  # 16 images: 4 shards of 4
VAL = 2  # a class: shards of 4 and 2
# File names that are not <class>_<i>.jpg/.png: dots the key cannot keep, and ImageNet's .JPEG.
ODD_NAMES = {("train", "dog", 0): "dog_0.final.jpg", ("train", "owl", 2): "owl_2.JPEG"}


def colour(c: int, i: int) -> list[int]:
    """Image i of class c: its class's channel full, the next one telling the images apart."""
    rgb = [0, 0, 0]
    rgb[c], rgb[(c + 1) % 3] = 250, 20 + 30 * i
    return rgb


def identity(image: torch.Tensor) -> tuple[int, int]:
    """(class, image number) of a sample painted by :func:`colour` (read with mean 0, std 1)."""
    rgb = image.mean((1, 2)) * 255
    c = int(rgb.argmax())
    return c, round((float(rgb[(c + 1) % 3]) - 20) / 30)


def key_identity(key: str) -> tuple[int, int]:
    """(class, image number) of a sample's key, ``<class>/<class>_<i>...``."""
    name, stem = key.split("/")
    return CLASSES.index(name), int(stem.split("_")[1])


def make_tree(root: Path) -> Path:
    """An ImageFolder tree of solid 8x8 JPEGs and PNGs (in turn) of the three classes."""
    for split, counts in (("train", TRAIN), ("val", dict.fromkeys(CLASSES, VAL))):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(counts[name]):
                file = ODD_NAMES.get((split, name, i), f"{name}_{i}.{('jpg', 'png')[i % 2]}")
                image = np.full((8, 8, 3), colour(c, i), dtype=np.uint8)
                Image.fromarray(image).save(folder / file)
    return root


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """A shard's samples, read with tarfile alone: key -> extension -> bytes."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, extension = member.name.split(".", 1)
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def datamodule(root: Path, rank: int | None = None, **kwargs) -> WebDatasetDataModule:
    """Samples as the colours were painted (no jitter, mean 0, std 1), 8 px, batches of 2."""
    kwargs = {
        "image_size": 8,
        "augment": {"color_jitter": None},
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "batch_size": 2,
        "num_workers": 0,
        "persistent_workers": False,
        **kwargs,
    }
    dm = WebDatasetDataModule(root, **kwargs)
    if rank is not None:  # one of two ranks, as a trainer would say
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
    return dm


def identities(batches) -> list[tuple[int, int]]:
    return [identity(image) for batch in batches for image in batch["image"]]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(tree, out, shard_size=4)
    return out


def test_the_shards_hold_each_image_file_as_it_is_with_its_class(tree, shards):
    info = json.loads((shards / "_info.json").read_text())
    assert info["classes"] == CLASSES
    for split, total in (("train", 16), ("val", 6)):
        entry = info["splits"][split]
        files = [path for path in sorted((tree / split).rglob("*")) if path.is_file()]
        expected = {f"{p.parent.name}/{p.stem.replace('.', '_')}": p for p in files}
        found: dict[str, dict[str, bytes]] = {}
        for name, length in zip(entry["filenames"], entry["shard_lengths"], strict=True):
            samples = tar_samples(shards / name)
            assert len(samples) == length and not set(samples) & set(found)
            found.update(samples)
        assert entry["num_samples"] == total == len(found)
        assert set(found) == set(expected)
        for key, sample in found.items():
            path = expected[key]
            extension = "jpg" if path.suffix == ".JPEG" else path.suffix[1:]
            label = CLASSES.index(key.split("/")[0])
            assert sample == {extension: path.read_bytes(), "cls": b"%d" % label}
    assert info["splits"]["train"]["shard_lengths"] == [4, 4, 4, 4]
    assert info["splits"]["val"]["filenames"] == ["val-000000.tar", "val-000001.tar"]
    # Training shards mix the classes; validation keeps the folders' order.
    assert len({key.split("/")[0] for key in tar_samples(shards / "train-000000.tar")}) > 1
    assert list(tar_samples(shards / "val-000000.tar")) == [
        "cat/cat_0", "cat/cat_1", "dog/dog_0", "dog/dog_1"
    ]  # fmt: skip


def test_the_command_writes_the_same_shards(tree, shards, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "visionattn.data.write_shards", str(tree), str(out)]
    result = subprocess.run(
        [*command, "--shard-size", "4", "--splits", "train", "val"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train-000003.tar: 4 images" in result.stdout
    assert f"index: {out / '_info.json'}" in result.stdout
    written = sorted(path.name for path in out.iterdir())
    assert written == sorted(path.name for path in shards.iterdir())
    assert all((out / name).read_bytes() == (shards / name).read_bytes() for name in written)


def test_the_writer_names_what_is_wrong_with_its_input(tree, shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert exit.value.code == 1
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="already holds shards"):
        write_shards(tree, shards)
    src = tmp_path / "src"
    shutil.copytree(tree, src)
    (src / "val" / "yak").mkdir()
    with pytest.raises(DatasetError, match=r"not among the 3 classes .*: yak"):
        write_shards(src, tmp_path / "out")
    with pytest.raises(DatasetError, match="test does not exist"):
        write_shards(tree, tmp_path / "out", splits=["train", "test"])


def test_validation_reads_every_image_once_with_its_class(shards):
    dm = datamodule(shards, num_workers=2)  # a shard each
    dm.setup("validate")
    assert dm.num_classes == 3
    batches = list(dm.val_dataloader())
    seen = identities(batches)
    assert sorted(seen) == [(c, i) for c in range(3) for i in range(VAL)]
    labels = [label for batch in batches for label in batch["label"].tolist()]
    assert labels == [c for c, _ in seen]


def test_training_deals_disjoint_shards_to_every_worker_of_every_rank(shards, monkeypatch):
    shard_of = {
        key_identity(key): name
        for name in (f"train-{n:06d}.tar" for n in range(4))
        for key in tar_samples(shards / name)
    }
    deals = []
    for epoch in (0, 1):
        deal = []
        for rank in (0, 1):
            dm = datamodule(shards, rank=rank, num_workers=2)
            dm.setup("fit")
            assert len(dm.train_set) == 8  # 16 samples over 2 ranks
            dm.load_state_dict({"next_train_epoch": epoch, "classes": CLASSES})
            dm.train_set.begin_epoch()
            for worker in (0, 1):
                info = SimpleNamespace(id=worker, num_workers=2)
                monkeypatch.setattr(shards_module, "get_worker_info", lambda info=info: info)
                samples = list(dm.train_set)
                seen = {identity(sample["image"]) for sample in samples}
                names = {shard_of[sample] for sample in seen}
                # 4 shards for 4 workers: each reads one whole shard, no sample twice.
                assert len(samples) == len(seen) == 4 and len(names) == 1
                assert all(sample["label"] == identity(sample["image"])[0] for sample in samples)
                deal.append(names.pop())
        assert sorted(deal) == sorted(set(shard_of.values()))
        deals.append(deal)
    assert deals[0] != deals[1]  # the shards are dealt anew every epoch


def test_every_rank_runs_the_batches_it_announces_from_uneven_shards(tree, tmp_path):
    write_shards(tree, tmp_path, shard_size=3)  # 3, 3, 3, 3, 3 and 1 images for 4 workers
    for rank in (0, 1):
        dm = datamodule(tmp_path, rank=rank, num_workers=2, batch_size=3)
        dm.setup("fit")
        loader = dm.train_dataloader()
        batches = list(loader)
        # ceil(16 / 4 workers) = 4 samples a worker, rounded up to 2 whole batches of 3: 4 batches
        # a rank, whatever the deal.
        assert len(loader) == len(batches) == 4
        assert all(len(batch["label"]) == 3 for batch in batches)


def test_epochs_reshuffle_and_the_seed_and_a_checkpoint_repeat_them(shards):
    def build(seed: int) -> WebDatasetDataModule:
        # Persistent workers: each epoch must reach the workers started in the first.
        dm = datamodule(shards, seed=seed, num_workers=2, persistent_workers=True)
        dm.setup("fit")
        return dm

    dm = build(seed=0)
    loader = dm.train_dataloader()
    first, second = identities(loader), identities(loader)
    assert sorted(first) == sorted(second) and len(set(first)) == 16
    assert first != second
    assert identities(build(seed=0).train_dataloader()) == first
    assert identities(build(seed=1).train_dataloader()) != first
    state = dm.state_dict()
    assert state["next_train_epoch"] == 2
    resumed = build(seed=0)
    resumed.load_state_dict(state)
    assert identities(resumed.train_dataloader()) == identities(loader)


def stopped_after(batches: int, of: int) -> SimpleNamespace:
    """A one-process trainer, as a checkpoint finds it ``batches`` into an epoch of ``of``."""
    progress = SimpleNamespace(current=SimpleNamespace(completed=batches))
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
    return SimpleNamespace(global_rank=0, world_size=1, num_training_batches=of, fit_loop=loop)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_stopped_mid_epoch_resumes_at_the_batch_after_the_last_trained(shards, workers):
    def build(num_workers: int = workers) -> WebDatasetDataModule:
        dm = datamodule(shards, num_workers=num_workers, persistent_workers=num_workers > 0)
        dm.setup("fit")
        return dm

    def epoch(loader) -> list[list[tuple[int, int]]]:
        return [identities([batch]) for batch in loader]

    loader = build().train_dataloader()
    straight = [epoch(loader) for _ in range(3)]
    assert len(straight[1]) == 8  # 16 samples in batches of 2

    # Stopped 3 batches into the second epoch: an odd count, so that with two workers the next
    # batch is the second worker's.
    stopped = build()
    loader = stopped.train_dataloader()
    assert epoch(loader) == straight[0]
    assert epoch(islice(loader, 3)) == straight[1][:3]
    stopped.trainer = stopped_after(3, of=8)
    state = stopped.state_dict()
    assert state["next_train_epoch"] == 1 and state["train_batches_done"] == 3
    resumed = build()
    resumed.load_state_dict(state)
    loader = resumed.train_dataloader()
    assert epoch(loader) == straight[1][3:]
    assert epoch(loader) == straight[2]  # and the epoch after it whole

    # The batches were dealt to that many workers: another number is refused, naming it.
    other = build(num_workers=2 - workers + 1)
    with pytest.raises(DatasetError, match=rf"data.num_workers={workers}\b"):
        other.load_state_dict(state)


def test_the_sample_buffer_shuffles_only_as_far_as_it_holds():
    order = list(shuffled(range(100), 10, random.Random(0)))
    assert sorted(order) == list(range(100)) and order != list(range(100))
    # Nothing comes out before the 9 ahead of it have gone into the buffer.
    assert all(item - position < 10 for position, item in enumerate(order))
    assert list(shuffled(range(5), 1, random.Random(0))) == list(range(5))


def test_an_unreadable_image_is_skipped_by_its_name_or_raises_when_strict(tree, tmp_path, caplog):
    src = tmp_path / "src"
    shutil.copytree(tree, src)
    (src / "val" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    write_shards(src, tmp_path / "shards", shard_size=4)
    name = "val-000000.tar/cat/broken.jpg"  # sorted first in val
    dm = datamodule(tmp_path / "shards")
    dm.setup("validate")
    with caplog.at_level(logging.WARNING):
        batches = list(dm.val_dataloader())
    assert [n for batch in batches for n in batch.get("skipped", [])] == [name]
    assert sorted(identities(batches)) == [(c, i) for c in range(3) for i in range(VAL)]
    assert f"unreadable image {name}" in caplog.text
    strict = datamodule(tmp_path / "shards", strict=True)
    strict.setup("validate")
    with pytest.raises(UnreadableImage, match=name):
        list(strict.val_dataloader())


def test_a_truncated_shard_gives_what_it_holds_or_raises_when_strict(shards, tmp_path, caplog):
    root = tmp_path / "shards"
    shutil.copytree(shards, root)
    path = root / "val-000000.tar"
    with tarfile.open(path) as tar:
        second_image = tar.getmembers()[3]
    # The first sample, and the second cut inside its image.
    path.write_bytes(path.read_bytes()[: second_image.offset_data + 10])
    dm = datamodule(root)
    dm.setup("validate")
    with caplog.at_level(logging.WARNING):
        seen = identities(dm.val_dataloader())
    assert sorted(seen) == [(0, 0), (2, 0), (2, 1)]  # and val-000001.tar's two owls
    assert f"unreadable shard {path} after" in caplog.text
    strict = datamodule(root, strict=True)
    strict.setup("validate")
    with pytest.raises(DatasetError, match=r"unreadable shard .*val-000000\.tar"):
        list(strict.val_dataloader())


def test_labels_follow_the_class_names_of_the_checkpoint(shards):
    dm = datamodule(shards)
    dm.setup("validate")
    checkpoint = ["owl", "cat", "dog"]  # as a model trained on other shards learned them
    dm.load_state_dict({"next_train_epoch": 0, "classes": checkpoint})
    batches = list(dm.val_dataloader())
    expected = [checkpoint.index(CLASSES[c]) for c, _ in identities(batches)]
    assert [label for batch in batches for label in batch["label"].tolist()] == expected
    assert sorted(expected) == [0, 0, 1, 1, 2, 2]
    lacking = datamodule(shards)
    lacking.load_state_dict({"next_train_epoch": 0, "classes": ["cat", "dog"]})
    with pytest.raises(DatasetError, match=r"not among the .*: owl"):
        lacking.setup("validate")


def test_missing_files_name_the_path_and_the_writer(shards, tmp_path, monkeypatch):
    # three loader workers a rank, as on a machine with the CPUs for them
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    nowhere, index = re.escape(str(tmp_path / "nowhere")), re.escape(str(tmp_path / "_info.json"))
    with pytest.raises(DatasetError, match=f"{nowhere} does not exist.*visionattn-shards"):
        datamodule(tmp_path / "nowhere").setup("fit")
    with pytest.raises(DatasetError, match=f"{index} is missing.*visionattn-shards"):
        datamodule(tmp_path).setup("fit")
    root = tmp_path / "shards"
    shutil.copytree(shards, root)
    (root / "train-000002.tar").unlink()
    shard = re.escape(str(root / "train-000002.tar"))
    with pytest.raises(DatasetError, match=f"{shard} is missing.*visionattn-shards"):
        datamodule(root).setup("fit")
    datamodule(root).setup("validate")  # validation needs no training shard
    with pytest.raises(DatasetError, match=r"not downloaded.*visionattn-shards"):
        datamodule(shards, download=True).prepare_data()
    with pytest.raises(DatasetError, match=r"3 classes .* set data\.num_classes=3"):
        datamodule(shards, num_classes=5).setup("fit")
    with pytest.raises(DatasetError, match="4 training shards cannot feed 2 ranks x 3 loader"):
        datamodule(shards, rank=0, num_workers=3).setup("fit")


def test_shard_patterns_choose_indexed_shards(shards):
    dm = datamodule(shards, train_shards="train-{000001..000002}.tar")
    dm.setup("fit")
    assert [shard.path.name for shard in dm.train_set.shards] == [
        "train-000001.tar", "train-000002.tar"
    ]  # fmt: skip
    assert len(dm.train_set) == 8 and len(identities(dm.train_dataloader())) == 8
    with pytest.raises(DatasetError, match=r"names train-000008\.tar, which .* does not list"):
        datamodule(shards, train_shards="train-00000{8..9}.tar").setup("fit")


def test_the_config_builds_the_datamodule(shards):
    cfg = OmegaConf.load(CONFIG)
    cfg.root, cfg.num_classes, cfg.num_workers = str(shards), 3, 0
    dm = instantiate(cfg)
    assert isinstance(dm, WebDatasetDataModule)
    assert dm.shuffle_buffer == 1000 and dm.train_shards is None and not dm.strict
    dm.setup("validate")
    assert dm.classes == CLASSES


def test_a_sample_without_its_class_names_what_it_holds(shards, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(shards, root)
    (root / "val-000001.tar").unlink()
    with TarWriter(str(root / "val-000001.tar"), encoder=False) as tar:
        tar.write({"__key__": "owl/owl_0", "png": b"\x89PNG"})
    dm = datamodule(root)
    dm.setup("validate")
    with pytest.raises(DatasetError, match=r"val-000001\.tar/owl/owl_0 holds \.png: expected"):
        list(dm.val_dataloader())
