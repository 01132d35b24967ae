"""Coordinate Attention. Hou, Zhou and Feng, CVPR 2021, https://arxiv.org/abs/2103.02907.

In MobileNetV2 / MobileNeXt the paper puts it after the depthwise conv of each block; in a ResNet
it sits where the other gates do.
"""

import torch
from torch import nn


class CoordinateAttention(nn.Module):
    """``y = x * g_h * g_w``: pool along W (one vector per row) and along H (one per column),
    concatenate, ``f = h_swish(BN(conv1x1(.)))`` to ``mip = max(8, C / r)`` channels, split back,
    ``g_h = sigmoid(conv1x1(f_h))`` (C x H x 1) and ``g_w = sigmoid(conv1x1(f_w))`` (C x 1 x W).

    The shared 1x1 conv has no bias: the BN that follows would cancel it.

    Args:
        channels: input channels C.
        reduction: r in ``mip = max(min_hidden, C // r)``.
        min_hidden: the floor on the hidden width.
    """

    kind = "gate"

    def __init__(self, channels: int, *, reduction: int = 32, min_hidden: int = 8) -> None:
        super().__init__()
        if reduction < 1 or min_hidden < 1:
            raise ValueError(
                f"coordatt: reduction and min_hidden must be at least 1, got {reduction} and "
                f"{min_hidden}"
            )
        hidden = max(min_hidden, channels // reduction)
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(hidden, channels, kernel_size=1)
        self.conv_w = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pooled_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        f = self.act(self.bn1(self.conv1(torch.cat([pooled_h, pooled_w], dim=2))))
        f_h, f_w = torch.split(f, [h, w], dim=2)
        g_h = self.conv_h(f_h).sigmoid()  # (B, C, H, 1)
        g_w = self.conv_w(f_w).sigmoid().transpose(2, 3)  # (B, C, 1, W)
        return x * g_h * g_w
