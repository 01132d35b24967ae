"""ECA-Net: Efficient Channel Attention. Wang, Wu, Zhu, Li, Zuo and Hu, CVPR 2020,
https://arxiv.org/abs/1910.03151.

The kernel size follows the paper's adaptive rule ``k = |log2(C) / gamma + b / gamma|_odd``; the
official code fixes ``k = 3`` for every layer (a known bug report), which only matches the rule for
64 channels.
"""

import math

import torch
from torch import nn


def adaptive_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The paper's ``psi(C) = |log2(C) / gamma + b / gamma|_odd``: the odd number nearest to the
    value (its integer part when odd, that plus one when even), e.g. 3, 5, 5, 5, 7 for 64 .. 2048
    channels with the defaults."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """``x * sigmoid(conv1d_k(avgpool(x)))``: each channel's weight is a k-tap 1D convolution over
    its neighbours in the pooled channel vector, with no dimensionality reduction.

    Args:
        channels: input channels C.
        gamma, b: the mapping from C to the kernel size k (paper: 2 and 1).
        kernel_size: a fixed odd k instead of the adaptive one (the paper's ablation); None keeps
            the adaptive rule.
    """

    kind = "gate"

    def __init__(
        self,
        channels: int,
        *,
        gamma: float = 2.0,
        b: float = 1.0,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"eca: channels must be at least 1, got {channels}")
        if gamma <= 0:
            raise ValueError(f"eca: gamma must be positive, got {gamma}")
        k = adaptive_kernel_size(channels, gamma, b) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(
                f"eca: kernel_size must be a positive odd number (so that the {channels} channels "
                f"keep their positions), got {k}; odd sizes such as 1, 3, 5, 7 work"
            )
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C): channels as a sequence
        weights = self.conv(pooled).squeeze(1).sigmoid()
        return x * weights[:, :, None, None]
