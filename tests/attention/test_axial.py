import math

import pytest
import torch

from visionattn.attention import create_attention
from visionattn.attention.axial import AxialAttention


def masked_attention(x: torch.Tensor, qkv, heads: int, same) -> torch.Tensor:
    """Multi-head attention over all N = H * W positions of x (B, C, H, W), each query allowed
    only the keys for which same[query, key] is True (its column, or its row)."""
    b, c, h, w = x.shape
    t = torch.einsum("oc,bcn->bon", qkv.weight[:, :, 0, 0], x.flatten(2)) + qkv.bias[:, None]
    q, k, v = (u.reshape(b, heads, c // heads, h * w) for u in t.chunk(3, dim=1))
    logits = torch.einsum("bhdn,bhdm->bhnm", q, k) / math.sqrt(c // heads)
    weights = torch.softmax(logits.masked_fill(~same, float("-inf")), dim=-1)
    return torch.einsum("bhnm,bhdm->bhdn", weights, v).reshape(b, c, h, w)


def reference_axial(x: torch.Tensor, ax: AxialAttention) -> torch.Tensor:
    """Ho et al.: full self-attention restricted to the column (along H), then to the row
    (along W) of its output; out = x + gamma W_o(.)."""
    _, _, h, w = x.shape
    rows = torch.arange(h).repeat_interleave(w)  # row of each flattened position
    cols = torch.arange(w).repeat(h)
    same_column = cols[:, None] == cols[None, :]
    same_row = rows[:, None] == rows[None, :]
    y = masked_attention(x, ax.qkv_height, ax.heads, same_column)
    y = masked_attention(y, ax.qkv_width, ax.heads, same_row)
    out = torch.einsum("oc,bchw->bohw", ax.proj.weight[:, :, 0, 0], y)
    return x + ax.gamma * (out + ax.proj.bias[:, None, None])


def test_matches_masked_full_attention():
    torch.manual_seed(0)
    ax = create_attention("axial", 32, heads=4)
    torch.nn.init.ones_(ax.gamma)
    x = torch.randn(2, 32, 5, 7)
    out = ax(x)
    torch.testing.assert_close(out, reference_axial(x, ax))
    assert (out - x).abs().mean() > 0.02


def test_defaults_and_identity_at_init():
    ax = AxialAttention(64)
    assert ax.kind == "context" and ax.heads == 8
    x = torch.randn(2, 64, 4, 6)
    torch.testing.assert_close(ax(x), x, rtol=0, atol=0)


def test_heads_must_divide_the_channels():
    with pytest.raises(
        ValueError, match=r"axial: heads=8 must divide the 12 channels; .* 1, 2, 3, 4, 6, 12"
    ):
        AxialAttention(12)


def test_huge_inputs_under_half_precision_stay_finite():
    ax = AxialAttention(16)
    torch.nn.init.ones_(ax.gamma)
    x = torch.randn(2, 16, 8, 8) * 1000
    for dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            assert torch.isfinite(ax(x)).all(), dtype


def test_works_down_to_a_single_position():
    ax = AxialAttention(8, heads=2)
    for size in [(1, 1), (2, 2), (1, 3)]:
        assert ax(torch.randn(2, 8, *size)).shape == (2, 8, *size)
