"""Linformer attention. Wang, Li, Khabsa, Fang and Ma, Linformer: Self-Attention with Linear
Complexity, 2020, https://arxiv.org/abs/2006.04768.

Multi-head attention whose ``N = H * W`` keys and values are first projected along the positions
to ``k`` rows by learned ``E`` and ``F`` (``k x N``): ``softmax(q (E K)^T / sqrt(d)) (F V)``, so
the cost is ``N k`` rather than ``N^2`` (the paper's Eq. 7). ``E`` and ``F`` are shared by the
heads (the paper's "headwise sharing"). They tie the plugin to one feature size: it is built for
``feat_size`` and raises a clear error on another.
"""

import torch
from torch import nn

from visionattn.attention import ops


class LinformerAttention(ops.ZeroInitResidual):
    """``x + gamma * W_o MHA(q, E k, F v)`` with ``E``, ``F`` mapping ``H * W`` positions to
    ``k``; gamma starts at zero."""

    def __init__(
        self, channels: int, *, feat_size: tuple[int, int], k: int = 256, heads: int = 8
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(
                f"linformer: heads={heads} must divide the {channels} channels; "
                f"heads that work here: {_divisors(channels)}"
            )
        if len(feat_size) != 2 or min(feat_size) < 1 or k < 1:
            raise ValueError(
                f"linformer: needs feat_size=(H, W) >= 1 and k >= 1, got {feat_size}, {k}"
            )
        self.feat_size = tuple(feat_size)
        self.heads = heads
        positions = self.feat_size[0] * self.feat_size[1]
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.compress_keys = nn.Linear(positions, k, bias=False)  # the paper's E
        self.compress_values = nn.Linear(positions, k, bias=False)  # the paper's F
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if (height, width) != self.feat_size:
            built = self.feat_size
            raise ValueError(
                f"linformer: built for a {built[0]}x{built[1]} feature map (E and F project "
                f"{built[0] * built[1]} positions), got {height}x{width}; build it with "
                f"feat_size=({height}, {width}) (the model's img_size sets it)"
            )
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)  # (B, C, N) each
        k, v = self.compress_keys(k), self.compress_values(v)  # (B, C, k)
        q, k, v = (
            t.reshape(batch, self.heads, -1, t.shape[-1]).transpose(-1, -2) for t in (q, k, v)
        )
        out = ops.attend(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(-1, -2).reshape(batch, channels, height, width))


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
