import math

import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.issa import InterlacedSparseSelfAttention


def reference_step(x, relation, groups, real):
    """Self-attention softmax(q k^T / sqrt(d)) v within each explicit list of positions; padded
    positions are not keys (a padded query keeps itself)."""
    q, k, v = (
        F.conv2d(x, c.weight, c.bias) for c in (relation.query, relation.key, relation.value)
    )
    out = torch.zeros_like(v)
    for group in groups:
        rows = torch.tensor([r for r, _ in group])
        cols = torch.tensor([c for _, c in group])
        qg, kg, vg = (t[:, :, rows, cols].transpose(1, 2) for t in (q, k, v))  # (B, n, d)
        logits = qg @ kg.transpose(1, 2) / math.sqrt(qg.shape[-1])
        allowed = real[rows, cols][None, :] | torch.eye(len(group), dtype=torch.bool)
        attn = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        out[:, :, rows, cols] = (attn @ vg).transpose(1, 2)
    return out


def reference_issa(x: torch.Tensor, issa: InterlacedSparseSelfAttention) -> torch.Tensor:
    """Huang et al., sec. 3: pad to multiples of (P_h, P_w), long-range attention within the
    groups of positions that share an offset inside their P_h x P_w block, then short-range
    attention within each block, crop."""
    ph, pw = issa.down_factor
    _, _, h, w = x.shape
    pad_h, pad_w = -h % ph, -w % pw
    top, left = pad_h // 2, pad_w // 2
    xp = F.pad(x, (left, pad_w - left, top, pad_h - top))
    hp, wp = xp.shape[2:]
    real = torch.zeros(hp, wp, dtype=torch.bool)
    real[top : top + h, left : left + w] = True
    gh, gw = hp // ph, wp // pw
    long_range = [
        [(a + ph * i, b + pw * j) for i in range(gh) for j in range(gw)]
        for a in range(ph)
        for b in range(pw)
    ]
    short_range = [
        [(ph * i + a, pw * j + b) for a in range(ph) for b in range(pw)]
        for i in range(gh)
        for j in range(gw)
    ]
    y = reference_step(xp, issa.long_range, long_range, real)
    y = reference_step(y, issa.short_range, short_range, real)
    return x + issa.gamma * y[:, :, top : top + h, left : left + w]


def opened(issa: InterlacedSparseSelfAttention) -> InterlacedSparseSelfAttention:
    with torch.no_grad():
        issa.gamma.fill_(1.0)
    return issa


@pytest.mark.parametrize(
    ("size", "down_factor"), [((8, 6), (4, 3)), ((8, 6), (2, 2)), ((7, 5), (3, 2))]
)
def test_matches_explicit_long_range_groups_then_short_range_blocks(size, down_factor):
    torch.manual_seed(0)
    issa = opened(create_attention("issa", 16, down_factor=down_factor))
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(issa(x), reference_issa(x, issa))


def test_every_position_reaches_every_other():
    torch.manual_seed(0)
    issa = opened(create_attention("issa", 16, down_factor=(2, 3))).eval()
    x = torch.randn(1, 16, 6, 6)
    moved = x.clone()
    moved[:, :, 0, 0] += 1.0
    assert ((issa(moved) - issa(x)).abs().sum(1) > 0).all()


def test_paper_defaults_and_any_map_size():
    issa = InterlacedSparseSelfAttention(64)
    assert issa.down_factor == (8, 8)
    assert issa.long_range.query.out_channels == issa.short_range.key.out_channels == 32
    assert issa.long_range.value.out_channels == 64
    opened(issa)
    for size in [(2, 2), (9, 13)]:  # smaller than one block, and padded on both sides
        x = torch.randn(1, 64, *size)
        assert torch.isfinite(issa(x)).all()


def test_bad_down_factor_is_a_clear_error():
    with pytest.raises(ValueError, match=r"issa: down_factor must be two block sides >= 1"):
        InterlacedSparseSelfAttention(16, down_factor=(0, 8))


def test_large_inputs_stay_finite_under_bf16_autocast():
    issa = opened(create_attention("issa", 16, down_factor=(2, 2))).eval()
    x = 1e3 * torch.randn(2, 16, 7, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = issa(x)
    assert torch.isfinite(out).all()
