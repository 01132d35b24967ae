import pytest
import torch

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.eca import EfficientChannelAttention


def reference_eca(x: torch.Tensor, eca: EfficientChannelAttention) -> torch.Tensor:
    """Wang et al.: y = mean over H, W; w_c = sigmoid(sum_j k_j y_{c + j - k//2})
    with zeros past both ends of the channel axis; out = w_c * x_c."""
    kernel = eca.conv.weight[0, 0]
    k, channels = kernel.numel(), x.shape[1]
    y = x.mean(dim=(2, 3))
    weights = torch.zeros_like(y)
    for c in range(channels):
        for j in range(k):
            neighbour = c + j - k // 2
            if 0 <= neighbour < channels:
                weights[:, c] += kernel[j] * y[:, neighbour]
    return x * torch.sigmoid(weights)[:, :, None, None]


@pytest.mark.parametrize("kwargs", [{}, {"kernel_size": 7}])
def test_matches_the_papers_formula(kwargs):
    eca = create_attention("eca", 24, **kwargs)
    with torch.no_grad():
        eca.conv.weight.normal_()
    x = torch.randn(2, 24, 5, 7)
    torch.testing.assert_close(eca(x), reference_eca(x, eca))


def test_kernel_size_follows_the_adaptive_rule_not_a_fixed_three():
    # |log2(C) / 2 + 1 / 2|_odd for the widths of ResNet-50's stem and stages.
    expected = {64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7}
    assert {c: EfficientChannelAttention(c).kernel_size for c in expected} == expected
    assert EfficientChannelAttention(256, gamma=1.0, b=1.0).kernel_size == 9
    assert EfficientChannelAttention(2048, kernel_size=3).kernel_size == 3


def test_eca_resnet50_adds_one_kernel_per_block():
    # 3 blocks of 256 channels (k=5), 4 of 512 (5), 6 of 1024 (5), 3 of 2048 (7): 86 weights.
    def count(model):
        return sum(p.numel() for p in model.parameters())

    added = count(visionattn.create_model("resnet50", attn="eca"))
    assert added - count(visionattn.create_model("resnet50")) == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7


def test_bad_knobs_say_what_works():
    with pytest.raises(ValueError, match=r"eca: kernel_size must be a positive odd number.*got 4"):
        EfficientChannelAttention(64, kernel_size=4)
    with pytest.raises(ValueError, match="eca: gamma must be positive"):
        EfficientChannelAttention(64, gamma=0)
