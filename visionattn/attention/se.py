"""Squeeze-and-Excitation. Hu et al., CVPR 2018, https://arxiv.org/abs/1709.01507.

Written here rather than taken from timm's ``SEModule``, which rounds the reduced width to a
multiple of 8 by default; the paper uses ``C / r`` exactly.
"""

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """``x * sigmoid(W2 relu(W1 avgpool(x)))``: one learned weight per channel."""

    kind = "gate"

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean((2, 3), keepdim=True)
        excited = self.fc2(self.act(self.fc1(squeezed)))
        return x * excited.sigmoid()
