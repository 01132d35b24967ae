import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionattn.segmentation.inference import segment, slide_windows


def _conv(kernel_size: int, classes: int = 4) -> nn.Conv2d:
    return nn.Conv2d(3, classes, kernel_size, padding=kernel_size // 2).eval()


def test_slide_with_one_window_is_whole():
    predict, images = _conv(3), torch.randn(2, 3, 9, 11)
    whole = segment(predict, images, 4)
    assert torch.equal(segment(predict, images, 4, mode="slide", crop=(9, 11), stride=5), whole)
    # A window larger than the image is cut to it rather than padded.
    assert torch.equal(segment(predict, images, 4, mode="slide", crop=16, stride=8), whole)


def test_overlapping_windows_average_to_whole_for_a_pixelwise_model():
    # Integer weights and pixels keep every sum exact, so averaging equal logits over 1, 2, 3 or
    # more windows gives them back bit for bit.
    predict = _conv(1)
    with torch.no_grad():
        predict.weight.copy_(torch.randint(-3, 4, predict.weight.shape))
        predict.bias.copy_(torch.randint(-3, 4, predict.bias.shape))
    images = torch.randint(-4, 5, (2, 3, 11, 13)).float()
    slide = segment(predict, images, 4, mode="slide", crop=5, stride=(3, 2))
    assert torch.equal(slide, segment(predict, images, 4))


def test_window_grid():
    # rows: ceil((11 - 4) / 3) + 1 = 4, the last moved up to end at 11;
    # columns: ceil((13 - 6) / 4) + 1 = 3, the last moved left to end at 13.
    rows = [(0, 4), (3, 7), (6, 10), (7, 11)]
    cols = [(0, 6), (4, 10), (7, 13)]
    expected = [(y1, y2, x1, x2) for y1, y2 in rows for x1, x2 in cols]
    assert slide_windows((11, 13), (4, 6), (3, 4)) == expected

    # What predict is handed: pixel values encode their own row and column.
    ys, xs = torch.meshgrid(torch.arange(11.0), torch.arange(13.0), indexing="ij")
    images = torch.stack([ys, xs, torch.zeros_like(ys)]).unsqueeze(0)
    seen = []

    def predict(x):
        seen.append(
            (
                int(x[0, 0, 0, 0]),
                int(x[0, 0, -1, 0]) + 1,
                int(x[0, 1, 0, 0]),
                int(x[0, 1, 0, -1]) + 1,
            )
        )
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    segment(predict, images, 2, mode="slide", crop=(4, 6), stride=(3, 4))
    assert seen == expected


def test_window_grid_edges():
    assert slide_windows((8, 8), (4, 4), (4, 4)) == [
        (0, 4, 0, 4),
        (0, 4, 4, 8),
        (4, 8, 0, 4),
        (4, 8, 4, 8),
    ]
    assert slide_windows((3, 5), (4, 4), (2, 2)) == [(0, 3, 0, 4), (0, 3, 1, 5)]


def test_flip_of_a_flip_equivariant_model_changes_nothing():
    predict = _conv(3)
    with torch.no_grad():  # a kernel symmetric left-right commutes with the flip
        predict.weight.copy_((predict.weight + predict.weight.flip(-1)) / 2)
    images = torch.randn(2, 3, 8, 10)
    torch.testing.assert_close(segment(predict, images, 4, flip=True), segment(predict, images, 4))


def test_flip_averages_the_two_passes():
    predict, images = _conv(3), torch.randn(2, 3, 8, 10)
    plain = predict(images).softmax(1)
    mirrored = predict(images.flip(-1)).flip(-1).softmax(1)
    result = segment(predict, images, 4, flip=True)
    torch.testing.assert_close(result, (plain + mirrored) / 2)
    assert not torch.allclose(result, plain.detach())


def test_scales():
    predict, images = _conv(3), torch.randn(1, 3, 9, 12)
    assert torch.equal(segment(predict, images, 4, scales=(1.0,)), segment(predict, images, 4))

    # 0.5 resizes 9 x 12 to int(4.5 + 0.5) x 6 = 5 x 6; its logits go back to 9 x 12 before softmax.
    small = F.interpolate(images, size=(5, 6), mode="bilinear", align_corners=False)
    small_logits = F.interpolate(predict(small), size=(9, 12), mode="bilinear", align_corners=False)
    expected = (small_logits.softmax(1) + predict(images).softmax(1)) / 2
    torch.testing.assert_close(segment(predict, images, 4, scales=(0.5, 1.0)), expected)


def test_out_size():
    predict, images = _conv(3), torch.randn(2, 3, 6, 7)
    logits = F.interpolate(predict(images), size=(12, 20), mode="bilinear", align_corners=False)
    result = segment(predict, images, 4, out_size=torch.Size([12, 20]))
    torch.testing.assert_close(result, logits.softmax(1))
    torch.testing.assert_close(result.sum(1), torch.ones(2, 12, 20))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tiles"}, "'whole', 'slide'"),
        ({"mode": "slide", "stride": 4}, "needs crop"),
        ({"mode": "slide", "crop": 4}, "needs stride"),
        ({"mode": "slide", "crop": 4, "stride": 5}, "larger than crop"),
        ({"scales": ()}, "scales"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segment(_conv(1), torch.randn(1, 3, 8, 8), 4, **kwargs)


def test_wrong_number_of_classes_is_named():
    with pytest.raises(ValueError, match="for 5 classes"):
        segment(_conv(1), torch.randn(1, 3, 8, 8), 5)
