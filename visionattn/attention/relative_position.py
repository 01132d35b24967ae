"""Learned 2D relative position logits, the factorised form of Bello et al., Attention Augmented
Convolutional Networks, ICCV 2019, https://arxiv.org/abs/1904.09925 (section 3.1.1), shared by
the plugins that use it (aa, bot, halo).

The logit between query ``i`` and key ``j`` gets ``q_i . r^H[j_y - i_y] + q_i . r^W[j_x - i_x]``:
one learned table per axis, indexed by the displacement, shared across heads. Each table is
multiplied by the queries once, for every displacement (memory O(HW d), not O((HW)^2 d)), and
:func:`rel_to_abs` turns "query by displacement" logits into "query by key" logits with a pad and
a reshape (no gather, no ``Tensor.unfold``: it exports to ONNX and compiles without graph breaks).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import ops


def rel_to_abs(rel: torch.Tensor, key_len: int, stride: int = 1) -> torch.Tensor:
    """Relative logits ``(..., Lq, R)`` to absolute logits ``(..., Lq, key_len)``.

    Query ``i`` sits at key coordinate ``stride * i`` (plus a constant shift that the learned
    table absorbs), column ``c`` of ``rel`` holds the displacement ``c - stride * (Lq - 1)``, so
    ``R = key_len + stride * (Lq - 1)`` covers every displacement that occurs, and
    ``out[..., i, j] = rel[..., i, R - key_len + j - stride * i]``.

    The trick: pad each row by ``stride`` zeros, flatten, and read the flat buffer back in rows of
    ``R``; row ``i`` then starts ``stride * i`` columns further into the original row ``i``.
    """
    lq, r = rel.shape[-2], rel.shape[-1]
    if r != key_len + stride * (lq - 1):
        raise ValueError(
            f"relative logits: {r} displacements for {lq} queries with stride {stride} and "
            f"{key_len} keys; expected {key_len + stride * (lq - 1)}"
        )
    flat = F.pad(rel, (0, stride)).flatten(-2)[..., : lq * r]
    return flat.unflatten(-1, (lq, r))[..., r - key_len :]


class RelativePosition2d(nn.Module):
    """Learned relative height and width embeddings for queries on a ``query_size`` grid and keys
    on a ``key_size`` grid; ``forward(q)`` gives the relative logits to add to ``q k^T``.

    Args:
        dim: query depth per head (the tables are shared across heads, as in the AA paper).
        query_size: ``(Hq, Wq)``.
        key_size: ``(Hk, Wk)``; the same as ``query_size`` for all-to-all attention, the block
            plus its halo for blocked local attention.
        stride: queries sit every ``stride`` keys (HaloNet's strided attention).

    Each table has one row per displacement that occurs, ``Lk + stride * (Lq - 1)``, so every row
    is used; rows start at N(0, dim^-1) as in the AA paper's code.
    """

    def __init__(
        self, dim: int, query_size: Sequence[int], key_size: Sequence[int], stride: int = 1
    ) -> None:
        super().__init__()
        self.query_size = (int(query_size[0]), int(query_size[1]))
        self.key_size = (int(key_size[0]), int(key_size[1]))
        self.stride = stride
        (qh, qw), (kh, kw) = self.query_size, self.key_size
        self.height = nn.Parameter(torch.randn(kh + stride * (qh - 1), dim) * dim**-0.5)
        self.width = nn.Parameter(torch.randn(kw + stride * (qw - 1), dim) * dim**-0.5)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``q (..., Hq, Wq, dim)`` to fp32 logits ``(..., Hq * Wq, Hk * Wk)``, keys row-major."""
        return self.axes(q).dense()

    def axes(self, q: torch.Tensor) -> ops.AxisBias:
        """The same logits kept factored, ``(..., Hq * Wq, Hk)`` and ``(..., Hq * Wq, Wk)``:
        O(N (Hk + Wk)) memory where the expanded logits are O(N Hk Wk)."""
        (kh, kw), s = self.key_size, self.stride
        rel_w = rel_to_abs(ops.einsum_fp32("...hwd,rd->...hwr", q, self.width), kw, s)
        rel_h = rel_to_abs(ops.einsum_fp32("...hwd,rd->...whr", q, self.height), kh, s)
        return ops.AxisBias(rel_h.transpose(-3, -2).flatten(-3, -2), rel_w.flatten(-3, -2))

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, stride={self.stride}"
