from types import SimpleNamespace

import torch

from visionattn.data import ShapesDataModule


def make(**kwargs) -> ShapesDataModule:
    dm = ShapesDataModule(image_size=32, train_size=64, val_size=32, batch_size=8, **kwargs)
    dm.setup("fit")
    return dm


def test_batches_are_normalised_dicts_and_masks_are_untouched():
    dm = make(num_classes=4)
    batch = next(iter(dm.val_dataloader()))
    image, label, mask = batch["image"], batch["label"], batch["mask"]
    assert image.shape == (8, 3, 32, 32) and image.dtype == torch.float32
    assert label.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    raw = dm.val_set.render(0)[0].float() / 255
    torch.testing.assert_close(image[0], (raw - 0.5) / 0.25)
    assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) <= {0, 1, 2, 3, 4}


def train_order(dm: ShapesDataModule, epoch: int) -> list[int]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader.sampler)


def test_the_shuffle_is_a_function_of_seed_and_epoch():
    """What lets a resumed run see the batches an uninterrupted one would have seen."""
    first, again = make(), make()
    assert train_order(first, 3) == train_order(again, 3)
    assert train_order(first, 3) != train_order(first, 4)
    assert sorted(train_order(first, 3)) == list(range(64))


def test_each_rank_gets_its_own_part():
    parts = []
    for rank in range(2):
        dm = make()
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        parts.append(set(train_order(dm, 0)))
    assert len(parts[0]) == len(parts[1]) == 32
    assert not parts[0] & parts[1]
