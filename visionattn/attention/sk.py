"""Selective Kernel convolution. Li et al., Selective Kernel Networks, CVPR 2019,
https://arxiv.org/abs/1903.06586.
"""

from collections.abc import Sequence

import torch
from torch import nn


class SelectiveKernelConv(nn.Module):
    """Split, fuse, select (paper eq. 1-6). Split: branch ``i`` is a grouped 3x3 conv with
    dilation ``dilations[i]`` (a ``2d + 1`` field: the paper's 5x5 branch is the dilated 3x3),
    BN, ReLU, giving ``U_i``. Fuse: ``s = mean_HW(sum_i U_i)``, ``z = ReLU(BN(W s))`` with
    ``W: C -> d``, ``d = max(C / reduction, min_width)``. Select: ``a_i = softmax_i(A_i z)`` per
    channel, ``V = sum_i a_i * U_i``.

    The default ``groups=32`` is the paper's SK unit, G = 32 in SKNet-50 (a ResNeXt-50 32x4d);
    in a plain ResNet that makes the branches much lighter than the conv they replace, and
    ``groups=1`` keeps them full width. The BN on the pooled vector needs a batch of two or more
    in training.
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        stride: int = 1,
        dilations: Sequence[int] = (1, 2),
        groups: int = 32,
        reduction: int = 16,
        min_width: int = 32,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if channels % groups or out_channels % groups:
            working = [
                g for g in range(1, channels + 1) if channels % g == 0 and out_channels % g == 0
            ]
            raise ValueError(
                f"sk: groups {groups} must divide both {channels} input and {out_channels} "
                f"output channels; groups that work here: {', '.join(map(str, working))}"
            )
        if len(dilations) < 2:
            raise ValueError(f"sk: selecting needs two or more branches, got dilations={dilations}")
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    channels,
                    out_channels,
                    3,
                    stride=stride,
                    padding=d,
                    dilation=d,
                    groups=groups,
                    bias=False,
                ),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            for d in dilations
        )
        width = max(out_channels // reduction, min_width)
        self.fuse = nn.Sequential(
            nn.Linear(out_channels, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )
        # One matrix per branch (A, B, ... in the paper), stacked into one layer.
        self.select = nn.Linear(width, len(dilations) * out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([branch(x) for branch in self.branches], 1)  # (B, M, C, H, W)
        b, m, c = feats.shape[:3]
        z = self.fuse(feats.sum(1).mean((2, 3)))
        weights = self.select(z).reshape(b, m, c).softmax(1)
        return (feats * weights[:, :, :, None, None]).sum(1)
