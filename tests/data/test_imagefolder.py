import numpy as np
import pytest
import torch
from PIL import Image

from visionattn.data import DatasetError, ImageFolderDataModule, UnreadableImage

# A colour a class: the images say their class without any model.
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 60, 210)]


def make_imagefolder(
    root, classes=("cat", "dog", "emu"), per_class=6, size=16, splits=("train", "val"), seed=0
):
    """``root/<split>/<class>/<i>.jpg|png``: class ``i`` is ``COLOURS[i]`` with noise, JPEG and
    PNG files alternating."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(
                    np.array(COLOURS[index]) + rng.integers(-20, 21, (size, size, 3)), 0, 255
                ).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def make_data(root, **kwargs) -> ImageFolderDataModule:
    options = dict(image_size=16, crop_pct=1.0, batch_size=4, num_workers=0)
    return ImageFolderDataModule(root, **(options | kwargs))


def colour_class(image: torch.Tensor, data: ImageFolderDataModule) -> int:
    """The class whose colour the (normalised) image is closest to."""
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    rgb = ((image * std + mean) * 255).mean((1, 2))
    return int(torch.cdist(rgb[None], torch.tensor(COLOURS, dtype=torch.float))[0].argmin())


def test_labels_are_the_sorted_class_folders(tmp_path):
    make_imagefolder(tmp_path, classes=("emu", "cat", "dog"))
    data = make_data(tmp_path)
    data.setup("fit")
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3
    assert len(data.train_set) == len(data.val_set) == 18
    order = {"cat": 1, "dog": 2, "emu": 0}  # COLOURS index each folder was written with
    for sample in data.val_set:
        assert order[data.classes[sample["label"]]] == colour_class(sample["image"], data)


def test_the_checkpoint_class_list_maps_a_partial_validation_tree(tmp_path):
    make_imagefolder(tmp_path / "a")
    trained = make_data(tmp_path / "a")
    trained.setup("fit")
    state = trained.state_dict()
    # The data moved; its validation split lacks "cat", so folder order alone would shift labels.
    make_imagefolder(tmp_path / "b", classes=("dog", "emu"), splits=("val",))
    moved = make_data(tmp_path / "b")
    moved.load_state_dict(state)
    moved.setup("validate")
    labels = sorted({sample["label"] for sample in moved.val_set})
    assert labels == [1, 2]
    # Restoring after setup relabels the splits already built.
    again = make_data(tmp_path / "b")
    with pytest.raises(DatasetError, match="train does not exist"):
        again.setup("validate")
    again.classes = ["dog", "emu"]
    again.setup("validate")
    again.load_state_dict(state)
    assert sorted({sample["label"] for sample in again.val_set}) == [1, 2]


def test_a_validation_class_the_model_lacks_fails(tmp_path):
    make_imagefolder(tmp_path, classes=("cat", "dog"), splits=("train",))
    make_imagefolder(tmp_path, classes=("cat", "dog", "emu"), splits=("val",))
    with pytest.raises(
        DatasetError, match=r"val has classes that are not among the 2 classes \(cat, dog\): emu"
    ):
        make_data(tmp_path).setup("fit")


def test_num_classes_is_checked(tmp_path):
    make_imagefolder(tmp_path)
    with pytest.raises(DatasetError, match=r"has 3 classes .*set data.num_classes=3"):
        make_data(tmp_path, num_classes=5).setup("fit")


def test_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'train'} does not exist"):
        make_data(tmp_path).setup("fit")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "img.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="no class folders"):
        make_data(tmp_path).setup("fit")
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        make_data(tmp_path, download=True).prepare_data()


def corrupt(root):
    """A truncated JPEG and a text file named .png among the training images."""
    jpg = root / "train" / "dog" / "1.jpg"
    jpg.write_bytes(jpg.read_bytes()[:40])
    (root / "train" / "emu" / "notes.png").write_text("not an image")
    return {str(jpg), str(root / "train" / "emu" / "notes.png")}


def test_unreadable_images_are_named_skipped_and_counted(tmp_path, caplog):
    bad = corrupt(make_imagefolder(tmp_path))
    data = make_data(tmp_path, batch_size=10)
    data.setup("fit")
    assert len(data.train_set) == 19  # 18 written, one of them now truncated, and the text file
    [first, second] = list(data._loader(data.train_set))
    assert len(first["image"]) + len(second["image"]) == 17
    assert set(first.get("skipped", []) + second.get("skipped", [])) == bad
    assert {name for name in bad if name in caplog.text} == bad
    data.on_before_batch_transfer(first, 0)
    data.on_before_batch_transfer(second, 0)
    assert "skipped" not in first and data.skipped["val"] == 2  # no trainer: counted as val


def test_strict_mode_raises_on_the_first_unreadable_image(tmp_path):
    bad = corrupt(make_imagefolder(tmp_path))
    data = make_data(tmp_path, strict=True, batch_size=20)
    data.setup("fit")
    with pytest.raises(UnreadableImage, match=r"data\.strict=false") as error:
        next(iter(data._loader(data.train_set)))
    assert any(name in str(error.value) for name in bad)


def test_augmentation_comes_from_timm_and_repeats_with_the_seed(tmp_path):
    make_imagefolder(tmp_path, size=24)
    augment = {"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.5, "scale": [0.3, 1.0]}

    def first_batch(seed):
        data = make_data(tmp_path, augment=augment, num_workers=2, seed=seed, batch_size=18)
        data.setup("fit")
        return next(iter(data._loader(data.train_set)))["image"]

    names = [
        type(t).__name__ for t in make_data(tmp_path, augment=augment).train_transform.transforms
    ]
    assert names[:2] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip"]
    assert "RandAugment" in names and "RandomErasing" in names
    # RandAugment draws from Python's random, in two workers: seeded per worker, runs repeat.
    torch.testing.assert_close(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_randaugment_posterizes_at_full_magnitude():
    """timm keeps 0 bits at the top magnitude (a black image): the Pillow we install must too."""
    from timm.data.auto_augment import rand_augment_transform

    posterize = rand_augment_transform("rand-n1-m10-mstd0-inc1", {}).ops
    [op] = [op for op in posterize if op.name == "PosterizeIncreasing"]
    op.prob = 1.0
    image = Image.new("RGB", (4, 4), (200, 100, 50))
    assert op(image).getpixel((0, 0)) == (0, 0, 0)


def test_loader_settings_reach_the_dataloader(tmp_path):
    make_imagefolder(tmp_path)
    data = make_data(
        tmp_path, num_workers=1, pin_memory=True, persistent_workers=False, prefetch_factor=3
    )
    data.setup("fit")
    loader = data.train_dataloader()
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (1, True, False)
    assert loader.prefetch_factor == 3 and loader.drop_last


def test_workers_are_capped_by_the_cpus_the_process_may_use(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert make_data(tmp_path, num_workers=4).num_workers == 2  # the config's 4 on 2 CPUs
    assert make_data(tmp_path, num_workers=1).num_workers == 1  # fewer: as configured
    with pytest.raises(ValueError, match=r"data.num_workers must be a whole number >= 0, got -1"):
        make_data(tmp_path, num_workers=-1)


@pytest.mark.parametrize("key", ["batch_size", "image_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_below_one_are_refused_naming_the_key(tmp_path, key, value):
    with pytest.raises(ValueError, match=rf"data.{key} must be a whole number >= 1, got {value}"):
        make_data(tmp_path, **{key: value})


def test_check_finds_the_classes_and_refuses_fewer_images_than_a_batch(tmp_path):
    make_imagefolder(tmp_path, per_class=2)  # 6 training images
    data = make_data(tmp_path, batch_size=4)
    data.check()
    assert data.num_classes == 3 and len(data.train_set) == 6
    with pytest.raises(DatasetError, match=r"no full training batch.*data.batch_size=8"):
        make_data(tmp_path, batch_size=8).check()


def test_images_much_smaller_than_the_crop_get_one_hint(tmp_path, caplog):
    make_imagefolder(tmp_path, size=16)
    data = make_data(tmp_path, image_size=64)
    with caplog.at_level("WARNING", logger="visionattn.data.imagefolder"):
        data.setup("fit")
        data.setup("fit")  # the trainer builds the splits again: still one hint
    hints = [r.getMessage() for r in caplog.records if "much smaller" in r.getMessage()]
    assert hints == [
        f"the images in {tmp_path / 'train'} are about 16 px, much smaller than "
        "data.image_size=64: each is upsampled, at 16 times the compute of its own size; "
        "data.image_size=16 trains on them as they are"
    ]
    caplog.clear()
    make_data(tmp_path, image_size=24).setup("fit")  # 16 px at 24: near enough, no hint
    assert not [r for r in caplog.records if "much smaller" in r.getMessage()]


def test_an_empty_class_folder_is_named_in_a_warning(tmp_path, caplog):
    make_imagefolder(tmp_path)
    (tmp_path / "train" / "yak").mkdir()
    with caplog.at_level("WARNING", logger="visionattn.data.imagefolder"):
        data = make_data(tmp_path)
        data.setup("fit")
    assert data.num_classes == 4
    [warning] = [r.getMessage() for r in caplog.records if "without images" in r.getMessage()]
    assert warning == (
        f"{tmp_path / 'train'}: 1 class folder without images (yak): the model learns a class "
        "it never sees"
    )
