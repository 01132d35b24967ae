import numpy as np
import torch
from PIL import Image

from visionattn.segmentation.overlay import colorize, denormalize, overlay, save_overlays

PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_colorize():
    mask = torch.tensor([[0, 1], [2, 255]])
    expected = torch.tensor(
        [
            [[255, 0], [0, 0]],  # red
            [[0, 255], [0, 0]],  # green
            [[0, 0], [255, 0]],  # blue; the ignored pixel is black
        ],
        dtype=torch.uint8,
    )
    assert torch.equal(colorize(mask, PALETTE), expected)


def test_overlay_blends_coloured_pixels_only():
    image = torch.full((3, 1, 2), 100, dtype=torch.uint8)
    result = overlay(image, torch.tensor([[0, 255]]), PALETTE, alpha=0.25)
    # 0.75 x 100 + 0.25 x 255 = 138.75 -> 139 in red, 0.75 x 100 = 75 elsewhere; 255 untouched.
    expected = torch.tensor([[[139, 100]], [[75, 100]], [[75, 100]]], dtype=torch.uint8)
    assert torch.equal(result, expected)


def test_save_overlays(tmp_path):
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    preds = torch.randint(0, 3, (2, 4, 5))
    targets = torch.randint(0, 3, (2, 4, 5))
    paths = save_overlays(tmp_path / "val", images, preds, targets, PALETTE, start_index=3)
    assert [p.name for p in paths] == ["0003.png", "0004.png"]
    for i, path in enumerate(paths):
        picture = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert picture.shape == (3, 4, 15)
        assert torch.equal(picture[:, :, :5], images[i])
        assert torch.equal(picture[:, :, 5:10], overlay(images[i], preds[i], PALETTE))
        assert torch.equal(picture[:, :, 10:], colorize(targets[i], PALETTE))

    [path] = save_overlays(tmp_path, images[:1], preds[:1], None, PALETTE, start_index=0)
    assert Image.open(path).size == (10, 4)


def test_denormalize_inverts_normalisation():
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = (pixels / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.equal(denormalize(normalised, mean, std), pixels)
