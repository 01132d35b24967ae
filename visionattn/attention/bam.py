"""BAM: Bottleneck Attention Module. Park, Woo, Lee and Kweon, BMVC 2018,
https://arxiv.org/abs/1807.06514.

The paper places one BAM at each stage end of a ResNet (the "bottlenecks" of the network), not in
every block: see configs/attn/bam.yaml.
"""

import torch
from torch import nn


class BAM(nn.Module):
    """``F' = F + F * sigmoid(Mc(F) + Ms(F))`` with the two branches broadcast to C x H x W:

    - channel: ``Mc(F) = BN(W1 relu(W0 avgpool(F) + b0))``, ``C -> C/r -> C``;
    - spatial: ``Ms(F) = BN(conv1x1(dconv3x3(dconv3x3(conv1x1(F)))))``, ``C -> C/r -> C/r -> C/r
      -> 1``, the 3x3 convs dilated by d, each inner conv followed by BN and ReLU.

    The paper's output bias b1 is left out: the BN that follows subtracts it again (it would get
    no gradient). Because of the ``F +`` term, a fresh BAM scales its input by about 1.5, not 1.
    Training needs batches of at least 2 (the channel BN normalises one pooled vector a sample).

    Args:
        channels: input channels C.
        reduction: r, for both branches.
        dilation: d of the two 3x3 convolutions of the spatial branch.
    """

    kind = "gate"

    def __init__(self, channels: int, *, reduction: int = 16, dilation: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"bam: reduction must be at least 1, got {reduction}")
        if dilation < 1:
            raise ValueError(f"bam: dilation must be at least 1, got {dilation}")
        hidden = max(1, channels // reduction)
        self.channel_gate = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers: list[nn.Module] = [
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        ]
        for _ in range(2):
            layers += [
                nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.Conv2d(hidden, 1, kernel_size=1, bias=False), nn.BatchNorm2d(1)]
        self.spatial_gate = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.channel_gate(x.mean((2, 3), keepdim=True))  # (B, C, 1, 1)
        spatial = self.spatial_gate(x)  # (B, 1, H, W)
        return x * (1 + (channel + spatial).sigmoid())
