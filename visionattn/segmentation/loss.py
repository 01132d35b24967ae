"""Pixel-wise cross-entropy for segmentation, optionally with online hard example mining (OHEM).

OHEM: Shrivastava et al., "Training Region-based Object Detectors with Online Hard Example Mining",
https://arxiv.org/abs/1604.03540, here per pixel as in mmsegmentation's ``OHEMPixelSampler``
(``mmseg/structures/sampler/ohem_pixel_sampler.py``): train only on the pixels the model is unsure
of, but on enough of them that a nearly solved batch still gives a gradient.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def segmentation_loss(
    logits: Tensor, target: Tensor, ignore_index: int = 255, ohem: dict | None = None
) -> Tensor:
    """Mean cross-entropy over the labelled pixels of ``target``.

    ``logits`` (B, K, h, w) may be at any resolution: they are upsampled bilinearly
    (``align_corners=False``) to the size of ``target`` (B, H, W), so the loss is taken where the
    labels are, not on a downsampled label map. Pixels labelled ``ignore_index`` count for nothing;
    when every pixel is ignored the loss is 0, still attached to the graph, rather than NaN.

    Args:
        logits: class scores (B, K, h, w).
        target: class indices (B, H, W), or ``ignore_index``.
        ignore_index: the label of unlabelled pixels.
        ohem: ``{"thresh": float, "min_kept": int}`` to train on hard pixels only, or None.
            Of the labelled pixels, a pixel is kept when the softmax probability of its true class
            is below ``max(thresh, p[k])``, where ``p`` are those probabilities over the whole
            batch sorted ascending (0-based) and ``k = min_kept * B`` (mmseg counts ``min_kept``
            per image): the pixels below ``thresh``, but at least the ``k`` hardest (fewer only if
            probabilities tie at ``p[k]``).
            When ``k`` reaches the number of labelled pixels, all of them are kept (mmseg indexes
            ``p[n - 1]`` there, which drops the most confident pixel; we don't). The kept pixels'
            losses are summed and divided by the number of labelled pixels, as mmseg does with
            ``avg_non_ignore=True``, so OHEM only zeroes the easy pixels' terms of the plain loss.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    losses = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    labelled = target != ignore_index
    if ohem is not None:
        losses = losses * _hard_pixels(logits, target, labelled, **ohem)
    return losses.sum() / labelled.sum().clamp(min=1)


@torch.no_grad()
def _hard_pixels(
    logits: Tensor, target: Tensor, labelled: Tensor, thresh: float, min_kept: int
) -> Tensor:
    """The (B, H, W) mask of the pixels OHEM trains on; see :func:`segmentation_loss`."""
    probs = logits.float().softmax(dim=1)
    true_prob = probs.gather(1, target.where(labelled, 0).unsqueeze(1)).squeeze(1)
    sorted_prob = true_prob[labelled].sort().values
    kept = min_kept * target.shape[0]
    if kept >= sorted_prob.numel():
        return labelled
    threshold = sorted_prob[kept].clamp(min=thresh)
    return labelled & (true_prob < threshold)
