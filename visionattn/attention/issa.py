"""Interlaced Sparse Self-Attention. Huang, Yuan, Guo, Zhang, Chen and Wang, Interlaced Sparse
Self-Attention for Semantic Segmentation, arXiv 2019, https://arxiv.org/abs/1907.12273.

The dense N x N affinity is factored into two sparse ones. The map is cut into blocks of
``down_factor = (P_h, P_w)`` positions. Long-range attention: the positions that share the same
offset inside their block form a group (one position of every block, P_h * P_w groups) and
attend within it. Short-range attention: the positions of each block attend within the block.
Long-range then short-range, every position reaches every other one.
"""

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import ops


class InterlacedSparseSelfAttention(ops.ZeroInitResidual):
    """``x + gamma * short_range(long_range(x))``, each a self-attention
    ``softmax(q k^T / sqrt(d)) v`` (q, k of C / ``reduction`` channels, v of C) within its groups.

    A map whose sides are not multiples of ``down_factor`` is padded (half on each side) and the
    output cropped; the padded positions are masked out as keys, so the output at the real
    positions does not depend on the padding.
    """

    def __init__(
        self,
        channels: int,
        *,
        down_factor: tuple[int, int] = (8, 8),
        reduction: int = 2,
        chunk: int | None = None,
    ) -> None:
        super().__init__()
        ops.check_chunk("issa", chunk)
        down_factor = tuple(int(f) for f in down_factor)
        if len(down_factor) != 2 or min(down_factor) < 1:
            raise ValueError(
                f"issa: down_factor must be two block sides >= 1, e.g. (8, 8), got {down_factor}"
            )
        if reduction < 1:
            raise ValueError(f"issa: reduction must be >= 1, got {reduction}")
        self.down_factor = down_factor
        self.long_range = _Relation(channels, max(1, channels // reduction), chunk)
        self.short_range = _Relation(channels, max(1, channels // reduction), chunk)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        ph, pw = self.down_factor
        pad_h, pad_w = -height % ph, -width % pw
        top, left = pad_h // 2, pad_w // 2
        mask = None
        if pad_h or pad_w:
            x = F.pad(x, (left, pad_w - left, top, pad_h - top))
            rows = torch.arange(height + pad_h, device=x.device)
            cols = torch.arange(width + pad_w, device=x.device)
            real = ((rows >= top) & (rows < top + height))[:, None] & (
                (cols >= left) & (cols < left + width)
            )[None, :]
            mask = real[None, None]
        out = self.long_range(x, self.down_factor, True, mask)
        out = self.short_range(out, self.down_factor, False, mask)
        return out[:, :, top : top + height, left : left + width]


class _Relation(nn.Module):
    """Self-attention within the groups of one of the two steps."""

    def __init__(self, channels: int, inner: int, chunk: int | None) -> None:
        super().__init__()
        self.chunk = chunk
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(
        self,
        x: torch.Tensor,
        down_factor: tuple[int, int],
        long_range: bool,
        real: torch.Tensor | None,
    ) -> torch.Tensor:
        q, k, v = (
            _group(conv(x), down_factor, long_range) for conv in (self.query, self.key, self.value)
        )
        allowed = None
        if real is not None:
            # Padded keys are masked; a padded query keeps itself so no row is empty.
            keys = _group(real, down_factor, long_range)[..., 0]  # (1, groups, n)
            index = torch.arange(keys.shape[-1], device=x.device)
            allowed = keys[:, :, None, :] | (index[:, None] == index[None, :])
        out = ops.attend(q, k, v, allowed, chunk=self.chunk)
        return _ungroup(out, x.shape[2], x.shape[3], down_factor, long_range)


def _group(t: torch.Tensor, down_factor: tuple[int, int], long_range: bool) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of (P_h, P_w) -> (B, groups, n, C).

    Long range: group (a, b) holds the positions (a + P_h * i, b + P_w * j), n = HW / (P_h P_w).
    Short range: group (i, j) holds the P_h x P_w block at (P_h * i, P_w * j).
    """
    b, c, h, w = t.shape
    ph, pw = down_factor
    t = t.reshape(b, c, h // ph, ph, w // pw, pw)
    if long_range:
        return t.permute(0, 3, 5, 2, 4, 1).reshape(b, ph * pw, (h // ph) * (w // pw), c)
    return t.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // ph) * (w // pw), ph * pw, c)


def _ungroup(
    t: torch.Tensor, h: int, w: int, down_factor: tuple[int, int], long_range: bool
) -> torch.Tensor:
    """The inverse of :func:`_group`."""
    b, c = t.shape[0], t.shape[-1]
    ph, pw = down_factor
    if long_range:
        t = t.reshape(b, ph, pw, h // ph, w // pw, c).permute(0, 5, 3, 1, 4, 2)
    else:
        t = t.reshape(b, h // ph, w // pw, ph, pw, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, h, w)
