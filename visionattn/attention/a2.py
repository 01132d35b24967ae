"""Double attention. Chen, Kalantidis, Li, Yan and Feng, A^2-Nets: Double Attention Networks,
NeurIPS 2018, https://arxiv.org/abs/1810.11579.

Gather: n attention maps, each a softmax over the positions, pool the m-channel features A into
n global descriptors ``G = A B^T`` (m x n, second-order attention pooling). Distribute: at each
position a softmax over the n descriptors picks a mix of them, ``Z = G V``. A 1x1 conv takes Z
back to C channels and the result is added to the input.

Two traps of public ports are avoided: the gather softmax runs over the positions of one image
(not over the batch axis) and the descriptors are attention-weighted sums (not means); the
distribute softmax runs over the n descriptors at each position (not over the positions).
"""

import torch
from torch import nn

from visionattn.attention import ops


class DoubleAttention(ops.ZeroInitResidual):
    """``x + gamma * W_out (A softmax_N(B)^T) softmax_n(V)`` with A of m = C / ``reduction``
    channels and n = C / ``reduction`` gather and distribute maps B, V."""

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"a2: reduction must be >= 1, got {reduction}")
        inner = max(1, channels // reduction)
        self.features = nn.Conv2d(channels, inner, kernel_size=1)  # A, m channels
        self.gather = nn.Conv2d(channels, inner, kernel_size=1)  # B, n attention maps
        self.distribute = nn.Conv2d(channels, inner, kernel_size=1)  # V, n attention vectors
        self.expand = nn.Conv2d(inner, channels, kernel_size=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        features = self.features(x).flatten(2)  # (B, m, N)
        gather = ops.softmax(self.gather(x).flatten(2), dim=2, dtype=features.dtype)
        distribute = ops.softmax(self.distribute(x).flatten(2), dim=1, dtype=features.dtype)
        descriptors = torch.einsum("bmp,bnp->bmn", features, gather)  # (B, m, n)
        z = torch.einsum("bmn,bnp->bmp", descriptors, distribute)  # (B, m, N)
        return self.expand(z.reshape(b, -1, h, w))
