"""Pictures of predictions, to see what a number like mIoU hides: label maps in colour, blended over
the image, and saved side by side with the ground truth.

Every label without a colour in the palette, the ignore index 255 among them, is drawn black.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

Palette = Sequence[Sequence[int]] | Tensor


def colorize(mask: Tensor, palette: Palette) -> Tensor:
    """The uint8 (3, H, W) picture of the label map ``mask`` (H, W), label i in ``palette[i]``."""
    return _colours(mask, palette)[0]


def overlay(image: Tensor, pred: Tensor, palette: Palette, alpha: float = 0.5) -> Tensor:
    """``image`` uint8 (3, H, W) with the colours of ``pred`` (H, W) blended in at ``alpha``.

    Pixels whose label has no colour show the image unchanged rather than darkened.
    """
    colours, coloured = _colours(pred, palette)
    blend = ((1 - alpha) * image.float() + alpha * colours.float()).round().to(torch.uint8)
    return torch.where(coloured, blend, image)


def save_overlays(
    path_dir: str | Path,
    images: Tensor,
    preds: Tensor,
    targets: Tensor | None,
    palette: Palette,
    start_index: int = 0,
) -> list[Path]:
    """Write one PNG a sample, ``{start_index:04d}.png`` on, and return their paths.

    Each is [image | image blended with the prediction | ground truth in colour], the last panel
    left out when ``targets`` is None.

    Args:
        path_dir: created if missing.
        images: uint8 (B, 3, H, W), e.g. from :func:`denormalize`.
        preds: class indices (B, H, W).
        targets: class indices (B, H, W), or None.
        palette: one (r, g, b) a class.
        start_index: the number of the first file, so successive batches don't overwrite.
    """
    if preds.shape != (images.shape[0], *images.shape[-2:]) or (
        targets is not None and targets.shape != preds.shape
    ):
        raise ValueError(
            f"images {tuple(images.shape)}, preds {tuple(preds.shape)} and targets "
            f"{None if targets is None else tuple(targets.shape)} must share batch, height, width"
        )
    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    images, preds = images.cpu(), preds.cpu()
    paths = []
    for i, (image, pred) in enumerate(zip(images, preds, strict=True)):
        panels = [image, overlay(image, pred, palette)]
        if targets is not None:
            panels.append(colorize(targets[i].cpu(), palette))
        path = path_dir / f"{start_index + i:04d}.png"
        Image.fromarray(torch.cat(panels, dim=-1).permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images (B, 3, H, W) from ones normalised as ``(x / 255 - mean) / std``."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    pixels = (images.float() * std + mean) * 255
    return pixels.round().clamp(0, 255).to(torch.uint8)


def _colours(mask: Tensor, palette: Palette) -> tuple[Tensor, Tensor]:
    """The (3, H, W) colours of ``mask`` and the (H, W) mask of pixels that have one."""
    palette = torch.as_tensor(palette, dtype=torch.uint8, device=mask.device).reshape(-1, 3)
    mask = mask.long()
    coloured = (mask >= 0) & (mask < len(palette))
    colours = palette[mask.where(coloured, 0)].permute(2, 0, 1)
    return colours * coloured, coloured
