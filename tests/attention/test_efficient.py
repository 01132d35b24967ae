import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.efficient import EfficientAttention


def reference_efficient(x: torch.Tensor, ea: EfficientAttention) -> torch.Tensor:
    """Shen et al., eq. 4 with the softmax normalisations, head by head:
    E = rho_q(Q) (rho_k(K)^T V), rho_k a softmax over the positions of each key channel,
    rho_q a softmax over each position's query channels; heads concatenated, reprojected."""
    b, _, h, w = x.shape
    k, q, v = (
        F.conv2d(x, conv.weight, conv.bias).flatten(2) for conv in (ea.key, ea.query, ea.value)
    )
    dk, dv = k.shape[1] // ea.heads, v.shape[1] // ea.heads
    heads = []
    for head in range(ea.heads):
        kh = k[:, head * dk : (head + 1) * dk]
        qh = q[:, head * dk : (head + 1) * dk]
        vh = v[:, head * dv : (head + 1) * dv]
        kh = kh.exp() / kh.exp().sum(dim=2, keepdim=True)  # (B, dk, N) over positions
        qh = qh.exp() / qh.exp().sum(dim=1, keepdim=True)  # (B, dk, N) over channels
        context = kh @ vh.transpose(1, 2)  # (B, dk, dv)
        heads.append(context.transpose(1, 2) @ qh)  # (B, dv, N)
    out = torch.cat(heads, dim=1).reshape(b, -1, h, w)
    return x + ea.gamma * F.conv2d(out, ea.reprojection.weight, ea.reprojection.bias)


def opened(ea: EfficientAttention) -> EfficientAttention:
    with torch.no_grad():
        ea.gamma.fill_(1.0)
    return ea


@pytest.mark.parametrize("heads", [1, 2])
def test_matches_the_papers_formula(heads):
    torch.manual_seed(0)
    ea = opened(create_attention("efficient", 16, heads=heads))
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(ea(x), reference_efficient(x, ea))


def test_paper_defaults():
    ea = EfficientAttention(256)
    assert ea.heads == 1
    assert ea.key.out_channels == ea.query.out_channels == ea.value.out_channels == 128
    assert ea.reprojection.out_channels == 256


def test_bad_heads_is_a_clear_error():
    with pytest.raises(
        ValueError, match="efficient: heads 3 must divide the 8 key and value channels"
    ):
        EfficientAttention(16, heads=3)


def test_large_inputs_stay_finite_under_bf16_autocast():
    ea = opened(create_attention("efficient", 16, heads=2)).eval()
    x = 1e3 * torch.randn(2, 16, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ea(x)
    assert torch.isfinite(out).all()
