"""Test-time segmentation: whole image or sliding window, with flip and multi-scale averaging.

The semantics are mmsegmentation's (``EncoderDecoder.slide_inference`` and ``whole_inference``,
``mmseg/models/segmentors/encoder_decoder.py``, and its test-time augmentation), so numbers
reported with its test settings can be compared with ours:

- whole: one forward pass on the image;
- slide: windows of ``crop`` every ``stride``, ``max(ceil((H - crop_h) / stride_h), 0) + 1`` of them
  down (likewise across); a window that would run past the image is moved back inside it
  (``y1 = max(y2 - crop_h, 0)``), so windows are never padded and one larger than the image is cut
  to it; the logits of overlapping windows are averaged;
- flip and scales: each (scale, flip) pass's logits are resized back to the output size,
  un-flipped and turned into softmax probabilities, and the probabilities are averaged.
"""

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("whole", "slide")


@torch.no_grad()
def segment(
    predict: Callable[[Tensor], Tensor],
    images: Tensor,
    num_classes: int,
    mode: str = "whole",
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    out_size: Sequence[int] | None = None,
) -> Tensor:
    """Class probabilities (B, K, H_out, W_out) of ``images`` (B, C, H, W).

    Args:
        predict: maps images (B, C, h, w) to logits (B, K, h, w) at the same size.
        images: the normalised batch.
        num_classes: K, the channels ``predict`` returns.
        mode: ``"whole"`` or ``"slide"``.
        crop: window (height, width), or one int for both; slide only, ignored by whole.
        stride: step between windows, at most ``crop``; slide only, ignored by whole.
        flip: also predict the horizontally flipped images.
        scales: factors the images are resized by (bilinear, ``align_corners=False``) to
            ``int(H * scale + 0.5)`` x ``int(W * scale + 0.5)``, as mmcv rounds, before predicting.
        out_size: (H_out, W_out) of the result, e.g. the size of the label map; the images' own size
            by default.
    """
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; expected one of {MODES}")
    if mode == "slide":
        crop, stride = _pair(crop, "crop"), _pair(stride, "stride")
        if stride[0] > crop[0] or stride[1] > crop[1]:
            raise ValueError(
                f"stride {stride} is larger than crop {crop}: pixels between windows would have "
                "no prediction"
            )
    if not scales or any(scale <= 0 for scale in scales):
        raise ValueError(f"scales must be a non-empty list of positive factors, got {scales}")
    height, width = images.shape[-2:]
    out_size = (height, width) if out_size is None else (int(out_size[0]), int(out_size[1]))

    probs = torch.zeros(images.shape[0], num_classes, *out_size, device=images.device)
    passes = 0
    for scale in scales:
        scaled = _resize(images, (int(height * scale + 0.5), int(width * scale + 0.5)))
        for flipped in (False, True) if flip else (False,):
            inputs = scaled.flip(-1) if flipped else scaled
            if mode == "slide":
                logits = _slide(predict, inputs, num_classes, crop, stride)
            else:
                logits = _predict(predict, inputs, num_classes)
            logits = _resize(logits.float(), out_size)
            if flipped:
                logits = logits.flip(-1)
            probs += logits.softmax(dim=1)
            passes += 1
    return probs / passes


def _slide(
    predict: Callable[[Tensor], Tensor],
    images: Tensor,
    num_classes: int,
    crop: tuple[int, int],
    stride: tuple[int, int],
) -> Tensor:
    """Logits averaged over the sliding windows; see the module docstring for the grid."""
    batch, _, height, width = images.shape
    logits = torch.zeros(batch, num_classes, height, width, device=images.device)
    count = torch.zeros(1, 1, height, width, device=images.device)
    for y1, y2, x1, x2 in slide_windows((height, width), crop, stride):
        logits[:, :, y1:y2, x1:x2] += _predict(predict, images[:, :, y1:y2, x1:x2], num_classes)
        count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def slide_windows(
    size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """The (y1, y2, x1, x2) of each sliding window over an image of ``size``, row by row."""
    (height, width), (crop_h, crop_w), (stride_h, stride_w) = size, crop, stride
    rows = max(math.ceil((height - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((width - crop_w) / stride_w), 0) + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + crop_h, height)
            x2 = min(col * stride_w + crop_w, width)
            boxes.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return boxes


def _predict(predict: Callable[[Tensor], Tensor], images: Tensor, num_classes: int) -> Tensor:
    logits = predict(images)
    expected = (images.shape[0], num_classes, *images.shape[-2:])
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"predict returned {tuple(logits.shape)} for images {tuple(images.shape)}; expected "
            f"{expected}: logits for {num_classes} classes at the input's size"
        )
    return logits.float()


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pair(value: int | Sequence[int] | None, name: str) -> tuple[int, int]:
    if value is None:
        raise ValueError(f"slide inference needs {name}: an int or (height, width)")
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or any(int(v) <= 0 for v in value):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value}")
    return int(value[0]), int(value[1])
