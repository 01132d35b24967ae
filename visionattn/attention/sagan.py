"""Self-attention of SAGAN. Zhang, Goodfellow, Metaxas and Odena, Self-Attention Generative
Adversarial Networks, ICML 2019, https://arxiv.org/abs/1805.08318.

Queries and keys are 1x1 convs to ``C / 8`` channels (the paper's ``k = 8``), values a 1x1 conv
to ``C``; every position attends to all the others with ``softmax(q k^T)``, no ``1 / sqrt(d)``
scaling (the paper has none), and the result is added back as ``x + gamma * o`` with gamma a
learned scalar that starts at zero. The paper's values go to ``C / 8`` and back through a fourth
1x1 conv ``W_v``; the single value conv to ``C`` used here (and in DANet's position branch, the
same module) is one linear map where the paper has a low-rank product of two.
"""

import torch
from torch import nn

from visionattn.attention import ops


class SelfAttention(ops.ZeroInitResidual):
    """``x + gamma * softmax(q k^T) v`` over all ``H * W`` positions; gamma starts at zero."""

    plugin = "sagan"  # the name its errors give, DANet's own in DANet

    def __init__(self, channels: int, *, reduction: int = 8, chunk: int | None = None) -> None:
        super().__init__()
        ops.check_chunk(self.plugin, chunk)
        self.chunk = chunk
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_tokens(conv(x)) for conv in (self.query, self.key, self.value))
        out = ops.attend(q, k, v, scale=1.0, chunk=self.chunk)[:, 0]  # (B, N, C)
        return out.transpose(1, 2).reshape(x.shape)


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H * W, C): one head over the positions."""
    return t.flatten(2).transpose(1, 2)[:, None]
