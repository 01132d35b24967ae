"""Axial attention. Ho, Kalchbrenner, Weissenborn and Salimans, Axial Attention in
Multidimensional Transformers, 2019, https://arxiv.org/abs/1912.12180; in a vision backbone as
Wang, Green, Adam, Yuille and Chen, Axial-DeepLab, ECCV 2020, https://arxiv.org/abs/2003.07853.

Two multi-head self-attention layers, each along one axis: first every column attends along H,
then every row of that result attends along W, so each output position has seen the whole map
at ``O(HW (H + W))`` cost instead of ``O((HW)^2)``. Standard scaled attention
(``1 / sqrt(d)``), 8 heads as in Axial-DeepLab, and no position terms (Axial-DeepLab's
position-sensitive terms would tie the plugin to one feature size).
"""

import torch
from torch import nn

from visionattn.attention import ops


class AxialAttention(ops.ZeroInitResidual):
    """``x + gamma * W_o attn_W(attn_H(x))``, each ``attn`` multi-head self-attention along one
    axis with its own q, k, v 1x1 convs; gamma starts at zero."""

    def __init__(self, channels: int, *, heads: int = 8) -> None:
        super().__init__()
        if channels % heads:
            divisors = ", ".join(str(d) for d in range(1, channels + 1) if channels % d == 0)
            raise ValueError(
                f"axial: heads={heads} must divide the {channels} channels; "
                f"heads that work here: {divisors}"
            )
        self.heads = heads
        self.qkv_height = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.qkv_width = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        x = self._along(self.qkv_height, x, axis=2)
        return self.proj(self._along(self.qkv_width, x, axis=3))

    def _along(self, qkv: nn.Conv2d, x: torch.Tensor, axis: int) -> torch.Tensor:
        """Multi-head self-attention along ``axis`` (2: H, 3: W) of ``x`` (B, C, H, W)."""
        batch, channels, height, width = x.shape
        # (B, heads, d, H, W) -> (B, other axis, heads, attended axis, d), and back
        order, back = (
            ((0, 4, 1, 3, 2), (0, 2, 4, 3, 1)) if axis == 2 else ((0, 3, 1, 4, 2), (0, 2, 4, 1, 3))
        )
        q, k, v = (
            t.reshape(batch, self.heads, -1, height, width).permute(order)
            for t in qkv(x).chunk(3, dim=1)
        )
        shape = q.shape
        # Four dimensions, (B * other axis) as the batch, which the fused kernels take.
        out = ops.attend(*(t.reshape(-1, *shape[2:]) for t in (q, k, v)))
        return out.reshape(shape).permute(back).reshape(batch, channels, height, width)
