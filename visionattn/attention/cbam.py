"""CBAM: Convolutional Block Attention Module. Woo, Park, Lee and Kweon, ECCV 2018,
https://arxiv.org/abs/1807.06521.

Channel attention, then spatial attention, applied in sequence. The spatial map comes from one 7x7
convolution over the two channel-pooled maps (one peer zoo uses a 49x49 kernel by mistake).
"""

import torch
from torch import nn


class CBAM(nn.Module):
    """``F' = F * Mc(F)``, ``F'' = F' * Ms(F')`` with

    - ``Mc(F) = sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))``, one MLP ``C -> C/r -> C`` (ReLU)
      shared by both pooled vectors;
    - ``Ms(F) = sigmoid(conv_kxk([mean_c(F); max_c(F)]))``.

    Args:
        channels: input channels C.
        reduction: r, the MLP's reduction ratio.
        kernel_size: the spatial convolution's kernel (odd, so the map keeps its size).
    """

    kind = "gate"

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"cbam: reduction must be at least 1, got {reduction}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"cbam: kernel_size must be a positive odd number (so the map keeps its size), "
                f"got {kernel_size}; the paper uses 7"
            )
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        x = x * channel.sigmoid()
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * self.spatial(pooled).sigmoid()
