import numpy as np
import pytest
import torch

from visionattn.data.shapes import SHAPES, ShapesDataset


def test_a_sample_is_fixed_by_seed_split_and_index_alone():
    a = ShapesDataset("train", 50, image_size=32, seed=3)
    b = ShapesDataset("train", 50, image_size=32, seed=3, cache=True)
    for i in (7, 3, 49, 7):  # any order, cached or not
        assert torch.equal(a[i]["image"], b[i]["image"])
        assert torch.equal(a[i]["mask"], b[i]["mask"])
    other_seed = ShapesDataset("train", 50, image_size=32, seed=4)
    assert not torch.equal(a[7]["image"], other_seed[7]["image"])


def test_splits_share_no_image():
    train = ShapesDataset("train", 300, image_size=32)
    val = ShapesDataset("val", 300, image_size=32)
    seen = {train[i]["image"].numpy().tobytes() for i in range(len(train))}
    assert not any(val[i]["image"].numpy().tobytes() in seen for i in range(len(val)))


def test_labels_are_balanced_and_the_mask_marks_the_shape():
    ds = ShapesDataset("val", 200, image_size=32, num_classes=10)
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert np.bincount(labels).tolist() == [20] * 10
    for i in range(20):
        sample = ds[i]
        image, mask, label = sample["image"], sample["mask"], sample["label"]
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert mask.shape == (32, 32)
        assert set(mask.unique().tolist()) == {0, label + 1}
        assert 0.02 < (mask > 0).float().mean() < 0.7
        # The shape is drawn in one colour: inside the mask the image is nearly uniform.
        inside = image[:, mask > 0].float()
        assert inside.std(dim=1).max() < 20


def test_colour_statistics_do_not_give_the_class_away():
    """A linear model on each image's mean and spread of colour stays near chance (10%)."""

    def features(ds):
        images = torch.stack([ds[i]["image"].float() for i in range(len(ds))])
        x = torch.cat([images.mean((2, 3)), images.std((2, 3))], dim=1)
        return x, torch.tensor([ds[i]["label"] for i in range(len(ds))])

    x, y = features(ShapesDataset("train", 3000, image_size=32))
    xv, yv = features(ShapesDataset("val", 1000, image_size=32))
    mean, std = x.mean(0), x.std(0)
    x, xv = (x - mean) / std, (xv - mean) / std
    linear = torch.nn.Linear(6, 10)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    accuracy = (linear(xv).argmax(1) == yv).float().mean()
    assert accuracy < 0.2


def test_bad_arguments_say_what_is_valid():
    with pytest.raises(ValueError, match="unknown split 'test2'; valid: train, val, test"):
        ShapesDataset("test2", 10)
    with pytest.raises(ValueError, match=f"num_classes must be 2 to {len(SHAPES)}"):
        ShapesDataset("train", 10, num_classes=11)
    with pytest.raises(ValueError, match="at least 16 pixels"):
        ShapesDataset("train", 10, image_size=8)
    with pytest.raises(IndexError):
        ShapesDataset("train", 10)[10]
