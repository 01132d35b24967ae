import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.a2 import DoubleAttention


def reference_a2(x: torch.Tensor, a2: DoubleAttention) -> torch.Tensor:
    """Chen et al., eq. 4-6, one position at a time: G = sum_j a_j softmax_j(b)^T (m x n),
    z_i = sum_k softmax_k(v_i)_k g_k, then a 1x1 conv back to C."""
    b, _, h, w = x.shape
    feats, gather, distribute = (
        F.conv2d(x, conv.weight, conv.bias).flatten(2)
        for conv in (a2.features, a2.gather, a2.distribute)
    )
    gather = gather.exp() / gather.exp().sum(dim=2, keepdim=True)  # over the positions
    distribute = distribute.exp() / distribute.exp().sum(dim=1, keepdim=True)  # over the n maps
    descriptors = torch.zeros(b, feats.shape[1], gather.shape[1])
    for j in range(h * w):
        descriptors += feats[:, :, j, None] * gather[:, None, :, j]
    z = torch.stack(
        [(descriptors * distribute[:, None, :, i]).sum(-1) for i in range(h * w)], dim=-1
    )
    out = F.conv2d(z.reshape(b, -1, h, w), a2.expand.weight, a2.expand.bias)
    return x + a2.gamma * out


def opened(a2: DoubleAttention) -> DoubleAttention:
    with torch.no_grad():
        a2.gamma.fill_(1.0)
    return a2


def test_matches_the_papers_gather_and_distribute():
    torch.manual_seed(0)
    a2 = opened(create_attention("a2", 16))
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(a2(x), reference_a2(x, a2))


def test_softmaxes_stay_inside_one_image():
    # The popular port's softmax over the batch axis makes an image depend on its batch.
    torch.manual_seed(0)
    a2 = opened(create_attention("a2", 16)).eval()
    x = torch.randn(3, 16, 4, 4)
    torch.testing.assert_close(a2(x)[:1], a2(x[:1]))


def test_paper_defaults():
    a2 = DoubleAttention(256)
    assert a2.features.out_channels == a2.gather.out_channels == 64  # m = n = C / 4
    assert a2.distribute.out_channels == 64
    assert a2.expand.in_channels == 64 and a2.expand.out_channels == 256


def test_bad_reduction_is_a_clear_error():
    with pytest.raises(ValueError, match="a2: reduction must be >= 1"):
        DoubleAttention(16, reduction=0)


def test_large_inputs_stay_finite_under_bf16_autocast():
    a2 = opened(create_attention("a2", 16)).eval()
    x = 1e3 * torch.randn(2, 16, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = a2(x)
    assert torch.isfinite(out).all()
