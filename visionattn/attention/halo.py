"""Blocked local self-attention with haloes. Vaswani, Ramachandran, Srinivas, Parmar, Hechtman and
Shlens, Scaling Local Self-Attention for Parameter Efficient Visual Backbones (HaloNets),
CVPR 2021, https://arxiv.org/abs/2103.12731.

The map is cut into non-overlapping ``b x b`` query blocks; every query of a block attends to the
same ``(b + 2h) x (b + 2h)`` window: its block plus a halo of ``h`` pixels, with relative height
and width logits. Strided, the queries are every ``stride``-th pixel of each block (a strided 1x1
query projection) while keys and values keep full resolution, so the output is ``H/s x W/s``.

Borders: the halo of a border block reaches outside the map, where keys and values are zero
padding. Public versions differ here (some let the queries attend to those zero keys, which
adds ``exp(q . r)`` mass on zero values and so depends on the block's position); we mask them,
so a border query attends only to real pixels, like a query of SASA or of a convolution's
receptive field, and zero padding never enters the softmax.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import ops
from visionattn.attention.relative_position import RelativePosition2d


def _block_sizes_that_work(height: int, width: int, stride: int) -> list[int]:
    side = math.gcd(height, width)
    return [b for b in range(1, side + 1) if side % b == 0 and b % stride == 0]


class HaloAttention(nn.Module):
    """Multi-head attention of each ``b x b`` block (every ``stride``-th pixel) over the block and
    its halo: ``softmax((q k^T + q r^T) / sqrt(d)) v`` per head, ``r`` the relative position
    embeddings, zero-padded halo positions masked.

    Args:
        channels: input channels.
        out_channels: output channels (default ``channels``), split across the heads: the
            width of the values.
        qk_channels: width of the queries and keys (default ``out_channels``), split across the
            same heads; HaloNet's H5..H7 widen the values alone (``rv`` > 1), so the two differ.
        stride: 1, or a divisor of ``block_size`` (2 for a downsampling block).
        block_size: ``b``, the side of a query block (8 in HaloNet H0..H2).
        halo_size: ``h``, pixels added on each side of a block for its keys (3 in H0..H2).
        num_heads: attention heads (8).
        feat_size: the input's ``(H, W)``, optional: given, a block size that does not divide it
            fails when the model is built instead of at the first forward.
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        qk_channels: int | None = None,
        stride: int = 1,
        block_size: int = 8,
        halo_size: int = 3,
        num_heads: int = 8,
        feat_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        qk_channels = qk_channels or out_channels
        if out_channels % num_heads or qk_channels % num_heads:
            common = math.gcd(out_channels, qk_channels)
            heads = [n for n in range(1, common + 1) if common % n == 0]
            widths = f"out_channels {out_channels}"
            widths += f" and qk_channels {qk_channels}" if qk_channels != out_channels else ""
            raise ValueError(
                f"halo: num_heads {num_heads} must divide {widths}; "
                f"heads that work: {', '.join(map(str, heads))}"
            )
        if block_size < 1 or halo_size < 0 or stride < 1 or block_size % stride:
            raise ValueError(
                f"halo: need block_size >= 1, halo_size >= 0 and a stride that divides the "
                f"block, got block_size={block_size}, halo_size={halo_size}, stride={stride}"
            )
        self.block_size, self.halo_size, self.stride = block_size, halo_size, stride
        self.num_heads = num_heads
        self.head_dim = qk_channels // num_heads  # of the queries and keys
        self.out_channels, self.qk_channels = out_channels, qk_channels
        # Queries only where the output is: a strided 1x1 conv picks every stride-th pixel.
        self.q = nn.Conv2d(channels, qk_channels, 1, stride=stride, bias=False)
        # Keys, then values, in one conv (one unfold of the halo windows).
        self.kv = nn.Conv2d(channels, qk_channels + out_channels, 1, bias=False)
        window = block_size + 2 * halo_size
        query_block = block_size // stride
        self.rel_pos = RelativePosition2d(
            self.head_dim, (query_block, query_block), (window, window), stride=stride
        )
        if feat_size is not None:
            self._check_size(int(feat_size[0]), int(feat_size[1]))

    def _check_size(self, height: int, width: int) -> None:
        b, s = self.block_size, self.stride
        if height % b or width % b:
            sizes = _block_sizes_that_work(height, width, s)
            strided = f" (multiples of the stride {s})" if s > 1 else ""
            works = ", ".join(map(str, sizes)) if sizes else "none"
            raise ValueError(
                f"halo: block_size {b} must divide the feature map, got {height}x{width}; "
                f"block sizes that work here{strided}: {works}"
            )

    def _halo_mask(self, blocks_h: int, blocks_w: int, height: int, width: int, device):
        """True where a window position of a block lies inside the map: ``(blocks, window^2)``."""
        b, h = self.block_size, self.halo_size
        offsets = torch.arange(b + 2 * h, device=device) - h

        def inside(blocks: int, size: int) -> torch.Tensor:
            pos = torch.arange(blocks, device=device)[:, None] * b + offsets
            return (pos >= 0) & (pos < size)

        rows, cols = inside(blocks_h, height), inside(blocks_w, width)
        return (rows[:, None, :, None] & cols[None, :, None, :]).flatten(0, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        self._check_size(height, width)
        b, h, s = self.block_size, self.halo_size, self.stride
        heads, dim, qk = self.num_heads, self.head_dim, self.qk_channels
        bq, window = b // s, b + 2 * h
        blocks_h, blocks_w = height // b, width // b

        # Queries: (B, heads, blocks_h, blocks_w, bq, bq, d).
        q = self.q(x).reshape(batch, heads, dim, blocks_h, bq, blocks_w, bq)
        q = q.permute(0, 1, 3, 5, 4, 6, 2)
        rel = self.rel_pos(q).flatten(2, 3)  # (B, heads, blocks, bq^2, window^2), fp32
        q = q.reshape(batch, heads, blocks_h * blocks_w, bq * bq, dim)

        # Keys and values: each block's window, zero-padded at the borders.
        kv = F.unfold(self.kv(x), kernel_size=window, stride=b, padding=h)
        k, v = kv.unflatten(1, (-1, window * window)).split([qk, self.out_channels], 1)
        k, v = (  # (B, heads, blocks, window^2, d) and (.., d_v)
            t.unflatten(1, (heads, -1)).permute(0, 1, 4, 3, 2) for t in (k, v)
        )

        # Logits (q k^T + q r^T) / sqrt(d): SDPA scales q k^T, the relative part is scaled here.
        inside = self._halo_mask(blocks_h, blocks_w, height, width, x.device)
        bias = (rel * dim**-0.5).masked_fill(~inside[:, None, :], float("-inf"))
        # Heads and blocks share one batch axis: 4D attention, as ONNX's exporter wants it.
        out = ops.attend(*(t.flatten(1, 2) for t in (q, k, v, bias)))  # (B, heads*blocks, ..)

        out = out.reshape(batch, heads, blocks_h, blocks_w, bq, bq, -1)
        out = out.permute(0, 1, 6, 2, 4, 3, 5)
        return out.reshape(batch, self.out_channels, blocks_h * bq, blocks_w * bq)
