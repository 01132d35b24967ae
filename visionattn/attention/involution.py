"""Involution. Li et al., Involution: Inverting the Inherence of Convolution for Visual
Recognition, CVPR 2021, https://arxiv.org/abs/2103.06255.

The stride follows RedNet (average-pool the kernel-generation input, unfold with the stride) but
pools with ``ceil_mode`` so odd maps give ``ceil(H / s)`` kernels like the unfold does; RedNet's
floor pooling breaks on odd sizes. Involution keeps the channel count; where the conv it replaces
changes it (a ResNet basic block's first conv), a 1x1 conv ``proj`` follows, as in a depthwise
separable conv. RedNet never needs one: its involutions sit where the width does not change.
"""

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import ops


class Involution(nn.Module):
    """``y[c, p] = sum_{k in K x K} H[g(c), k, p] * x[c, p * s + k]`` (paper eq. 4): a K x K kernel
    per output position ``p`` and per group of ``group_channels`` channels, generated from the
    input at that position (eq. 6: 1x1 conv to ``C / reduction``, BN, ReLU, 1x1 conv to
    ``K * K * G``, with ``G = C / group_channels``), applied to its zero-padded neighbourhood and
    shared by the channels of the group."""

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        stride: int = 1,
        kernel_size: int = 7,
        group_channels: int = 16,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"involution: kernel_size must be odd, got {kernel_size}")
        if channels % group_channels:
            working = [g for g in range(1, channels + 1) if channels % g == 0]
            raise ValueError(
                f"involution: group_channels {group_channels} must divide the {channels} "
                f"channels; group_channels that work here: {', '.join(map(str, working))}"
            )
        out_channels = out_channels or channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.groups = channels // group_channels
        hidden = max(1, channels // reduction)
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.span = nn.Conv2d(hidden, kernel_size * kernel_size * self.groups, 1)
        self.proj = (
            nn.Conv2d(channels, out_channels, 1, bias=False)
            if out_channels != channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        k, s = self.kernel_size, self.stride
        pooled = x if s == 1 else F.avg_pool2d(x, s, s, ceil_mode=True)
        kernel = self.span(self.reduce(pooled))  # (B, G * K * K, H', W')
        h, w = kernel.shape[-2:]
        kernel = kernel.reshape(b, self.groups, k * k, h, w)
        patches = F.unfold(x, k, padding=k // 2, stride=s)  # (B, C * K * K, H' * W')
        patches = patches.reshape(b, self.groups, c // self.groups, k * k, h, w)
        # A contraction, not (kernel * patches).sum(): the same numbers, and FLOP counters see
        # the multiply-accumulates the involution is made of. In fp32: the kernel is generated
        # from x, so the output grows like x^2 and overflows fp16 first.
        out = ops.einsum_fp32("bgkhw,bgckhw->bgchw", kernel, patches).reshape(b, c, h, w)
        return self.proj(out)
