"""Triplet Attention. Misra, Nalamada, Arasanipalai and Hou, "Rotate to Attend: Convolutional
Triplet Attention Module", WACV 2021, https://arxiv.org/abs/2010.03045.
"""

import torch
from torch import nn


def z_pool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The paper's Z-pool: max and mean over ``dim``, stacked as two channels (max first)."""
    return torch.stack([x.amax(dim), x.mean(dim)], dim=1)


class _ZPoolGate(nn.Module):
    """``sigmoid(BN(conv_kxk(pooled)))`` for a two-channel Z-pooled map."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(pooled)).sigmoid()


class TripletAttention(nn.Module):
    """The average of three gated copies of ``x``, one per pair of axes:

    - C-H: rotate so that W is the channel axis, Z-pool over W, a k x k conv over the (H, C) map;
    - C-W: rotate so that H is the channel axis, Z-pool over H, conv over the (C, W) map;
    - H-W: Z-pool over C, conv over the (H, W) map (a CBAM-like spatial gate);

    each ``sigmoid(BN(conv(Z-pool)))``, rotated back and multiplied into ``x``; then
    ``y = (y_ch + y_cw + y_hw) / 3``. Three 2 -> 1 convs and three one-channel BNs: 300 parameters
    with k = 7, whatever C is.

    Args:
        channels: input channels C (the module has no per-channel weights).
        kernel_size: k of the three convolutions (odd, so the maps keep their size).
    """

    kind = "gate"

    def __init__(self, channels: int, *, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"triplet: kernel_size must be a positive odd number (so the maps keep their "
                f"size), got {kernel_size}; the paper uses 7"
            )
        self.ch = _ZPoolGate(kernel_size)
        self.cw = _ZPoolGate(kernel_size)
        self.hw = _ZPoolGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_ch = self.ch(z_pool(x, 3).transpose(2, 3))  # (B, 1, H, C)
        g_cw = self.cw(z_pool(x, 2))  # (B, 1, C, W)
        g_hw = self.hw(z_pool(x, 1))  # (B, 1, H, W)
        gate = g_ch.permute(0, 3, 2, 1) + g_cw.transpose(1, 2) + g_hw
        return x * gate / 3
