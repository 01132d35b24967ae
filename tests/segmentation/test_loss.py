import math

import pytest
import torch
import torch.nn.functional as F

from visionattn.segmentation.loss import segmentation_loss


def test_upsamples_logits_and_averages_over_labelled_pixels():
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 10, 12))
    target[0, :3] = 255
    upsampled = F.interpolate(logits, size=(10, 12), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(upsampled, target, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, target), expected)


def test_other_ignore_index():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0] = -1
    expected = F.cross_entropy(logits, target, ignore_index=-1)
    torch.testing.assert_close(segmentation_loss(logits, target, ignore_index=-1), expected)


def test_all_ignored_is_zero_with_a_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 8, 8), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def _logits_with_true_prob(probs: list[list[float]]) -> torch.Tensor:
    """(B, 2, 1, N) logits whose softmax gives class 0 the probability ``probs[b][n]``."""
    p = torch.tensor(probs)
    return torch.stack([torch.zeros_like(p), torch.log((1 - p) / p)], dim=1).unsqueeze(2)


def _ohem_reference(probs, labelled, thresh, min_kept):
    """mmseg's OHEMPixelSampler rule written as a loop: the set of (image, pixel) kept."""
    pixels = [
        ((b, n), p)
        for b, (row, mask) in enumerate(zip(probs, labelled, strict=True))
        for n, (p, ok) in enumerate(zip(row, mask, strict=True))
        if ok
    ]
    valid = sorted(p for _, p in pixels)
    k = min_kept * len(probs)
    threshold = math.inf if k >= len(valid) else max(thresh, valid[k])
    return {pixel for pixel, p in pixels if p < threshold}


# Two images of four pixels; the last pixel of image 1 is unlabelled (and would be the hardest).
PROBS = [[0.1, 0.8, 0.95, 0.6], [0.5, 0.65, 0.9, 0.01]]
LABELLED = [[True, True, True, True], [True, True, True, False]]


@pytest.mark.parametrize(
    ("thresh", "min_kept", "kept"),
    [
        # thresh decides: sorted labelled probs are .1 .5 .6 .65 .8 .9 .95, k = 2 x 1 = 2 picks
        # 0.6 < 0.7, so everything below 0.7 is kept.
        (0.7, 1, {(0, 0), (1, 0), (0, 3), (1, 1)}),
        # min_kept decides: k = 2 x 3 = 6 picks 0.95 > 0.3, so the 6 hardest are kept.
        (0.3, 3, {(0, 0), (1, 0), (0, 3), (1, 1), (0, 1), (1, 2)}),
        # k = 2 x 4 = 8 reaches the 7 labelled pixels: all of them are kept.
        (0.3, 4, {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)}),
    ],
)
def test_ohem_keeps_the_pixels_of_the_reference_rule(thresh, min_kept, kept):
    assert _ohem_reference(PROBS, LABELLED, thresh, min_kept) == kept
    logits = _logits_with_true_prob(PROBS).requires_grad_()
    target = torch.tensor(LABELLED).logical_not().long().mul(255).unsqueeze(1)

    loss = segmentation_loss(logits, target, ohem={"thresh": thresh, "min_kept": min_kept})
    loss.backward()

    trained = logits.grad.abs().sum(dim=1).squeeze(1).nonzero().tolist()
    assert {tuple(pixel) for pixel in trained} == kept
    expected = sum(-math.log(PROBS[b][n]) for b, n in kept) / 7  # 7 labelled pixels
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_ranks_the_pixels_of_the_upsampled_logits():
    # With thresh 0 OHEM keeps the min_kept pixels of highest loss, here the 10 of 64 after
    # upsampling (the logits have only 16).
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 8, 8))
    upsampled = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    pixel_losses = F.cross_entropy(upsampled, target, reduction="none").flatten()
    expected = pixel_losses.topk(10).values.sum() / 64
    loss = segmentation_loss(logits, target, ohem={"thresh": 0.0, "min_kept": 10})
    torch.testing.assert_close(loss, expected)
