import math

import pytest
import torch

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.halo import HaloAttention


def reference_halo(x: torch.Tensor, halo: HaloAttention) -> torch.Tensor:
    """Naive local window attention, pixel by pixel (HaloNet, section 3): the query at (y, x),
    every stride-th pixel, attends to the pixels of its b x b block widened by h on each side that
    lie inside the map, with logits (q.k + q.(r^H[dy] + r^W[dx])) / sqrt(d)."""
    batch, _, height, width = x.shape
    b, h, s, heads = halo.block_size, halo.halo_size, halo.stride, halo.num_heads
    dim, qk = halo.out_channels, halo.qk_channels
    d, dv = qk // heads, dim // heads  # query/key and value depth per head
    q = torch.einsum("oc,bchw->bohw", halo.q.weight[:, :, 0, 0], x)  # at every pixel
    k = torch.einsum("oc,bchw->bohw", halo.kv.weight[:qk, :, 0, 0], x)
    v = torch.einsum("oc,bchw->bohw", halo.kv.weight[qk:, :, 0, 0], x)
    # Table row of displacement 0 for the block's first query: the most negative displacement,
    # from the last query of a block to the first key of its halo, is -(b - s + h).
    centre = b - s + h
    out = torch.zeros(batch, dim, height // s, width // s)
    for y in range(0, height, s):
        for x0 in range(0, width, s):
            top, left = y // b * b, x0 // b * b
            rows = [r for r in range(top - h, top + b + h) if 0 <= r < height]
            cols = [c for c in range(left - h, left + b + h) if 0 <= c < width]
            keys = [(r, c) for r in rows for c in cols]
            for n in range(heads):
                ch, ch_v = slice(n * d, (n + 1) * d), slice(n * dv, (n + 1) * dv)
                qi = q[:, ch, y, x0]
                kj = torch.stack([k[:, ch, r, c] for r, c in keys], 1)
                vj = torch.stack([v[:, ch_v, r, c] for r, c in keys], 1)
                rel = torch.stack(
                    [
                        halo.rel_pos.height[r - y + centre] + halo.rel_pos.width[c - x0 + centre]
                        for r, c in keys
                    ]
                )
                logits = (torch.einsum("bd,bmd->bm", qi, kj) + qi @ rel.T) / math.sqrt(d)
                out[:, ch_v, y // s, x0 // s] = torch.einsum("bm,bmd->bd", logits.softmax(1), vj)
    return out


@pytest.mark.parametrize(
    ("block", "halo_size", "stride", "size"),
    [(4, 1, 1, (8, 8)), (2, 1, 1, (6, 4)), (4, 2, 2, (8, 4)), (2, 0, 1, (4, 6))],
)
def test_equals_naive_local_window_attention(block, halo_size, stride, size):
    torch.manual_seed(0)
    halo = HaloAttention(
        6, out_channels=8, stride=stride, block_size=block, halo_size=halo_size, num_heads=2
    )
    x = torch.randn(2, 6, *size)
    torch.testing.assert_close(halo(x), reference_halo(x, halo), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("qk_channels", "stride"), [(4, 1), (8, 2)])
def test_values_wider_than_queries_and_keys(qk_channels, stride):
    # HaloNet's rv > 1 (H5..H7): values of 12 channels, queries and keys narrower.
    torch.manual_seed(0)
    halo = HaloAttention(
        6, out_channels=12, qk_channels=qk_channels, stride=stride, block_size=4, halo_size=1,
        num_heads=2,
    )  # fmt: skip
    assert halo.q.weight.shape[0] == qk_channels and halo.kv.weight.shape[0] == qk_channels + 12
    assert halo.rel_pos.height.shape[1] == qk_channels // 2  # the query/key head depth
    x = torch.randn(2, 6, 8, 4)
    out = halo(x)
    assert out.shape == (2, 12, 8 // stride, 4 // stride)
    torch.testing.assert_close(out, reference_halo(x, halo), rtol=1e-4, atol=1e-5)
    # The default, qk_channels = out_channels, keeps the layer (and its state dict) as it was.
    assert HaloAttention(6, out_channels=12, num_heads=2).kv.weight.shape[0] == 24
    with pytest.raises(ValueError, match="must divide out_channels 12 and qk_channels 9"):
        HaloAttention(6, out_channels=12, qk_channels=9, num_heads=2)


def test_one_block_with_no_halo_is_global_attention():
    # b = the whole map: every pixel sees every pixel, the zero-padded halo is all masked.
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 4)
    halo = HaloAttention(8, block_size=4, halo_size=2, num_heads=2)
    torch.testing.assert_close(halo(x), reference_halo(x, halo), rtol=1e-4, atol=1e-5)
    # The zero padding takes no weight: the values at the border do not depend on it.
    with torch.no_grad():
        halo.rel_pos.height[:2].fill_(1e4)  # displacements that only the padded halo has
    torch.testing.assert_close(halo(x), reference_halo(x, halo), rtol=1e-4, atol=1e-5)


def test_paper_defaults():
    halo = create_attention("halo", 64)
    assert (halo.block_size, halo.halo_size, halo.num_heads) == (8, 3, 8)
    # (b + 2h) + (b - 1) displacements per axis, one head's depth each.
    assert halo.rel_pos.height.shape == (2 * (8 + 3) - 1, 8)


def test_a_block_that_does_not_divide_the_map_fails_with_the_sizes_that_work():
    with pytest.raises(
        ValueError, match=r"block_size 8 .* got 12x12; .* work here: 1, 2, 3, 4, 6, 12"
    ):
        HaloAttention(16, feat_size=(12, 12))
    with pytest.raises(ValueError, match=r"got 12x18; .*multiples of the stride 2\): 2, 6$"):
        HaloAttention(16, stride=2, block_size=4, feat_size=(12, 18))
    halo = HaloAttention(16, block_size=4)  # no feat_size: checked at the first forward
    with pytest.raises(ValueError, match="got 6x8"):
        halo(torch.randn(1, 16, 6, 8))


def test_bad_heads_and_strides_fail_clearly():
    with pytest.raises(ValueError, match="heads that work: 1, 2, 3, 4, 6, 12"):
        HaloAttention(12, num_heads=8)
    with pytest.raises(ValueError, match="stride that divides the block"):
        HaloAttention(16, block_size=3, stride=2)


def test_the_backbone_checks_every_block_when_built():
    # HaloNets run at 256 px (maps 64, 32, 16, 8: b = 8 divides them all); 224 px gives 28.
    visionattn.create_model("resnet50", attn="halo", img_size=256)
    with pytest.raises(ValueError, match=r"halo at layer2\.1: .*block_size 8 .* got 28x28"):
        visionattn.create_model("resnet50", attn="halo", img_size=224)


def test_large_inputs_stay_finite_under_bf16_autocast():
    halo = HaloAttention(16, block_size=4, halo_size=1, num_heads=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = halo(1e3 * torch.randn(2, 16, 8, 8))
    assert torch.isfinite(out).all()
