"""External attention. Guo, Liu, Mu and Hu, Beyond Self-attention: External Attention using Two
Linear Layers for Visual Tasks, arXiv 2021 (TPAMI 2022), https://arxiv.org/abs/2105.02358.

The queries attend to a small learned memory shared by all images instead of to each other:
``A = double_norm(Q M_k^T)`` with ``M_k`` of S x C, ``out = A M_v``; linear in the number of
positions N. The double normalisation is the paper's: a softmax over the N positions (each
memory slot's column), then an L1 normalisation over the S slots (each position's row).
"""

import torch
from torch import nn

from visionattn.attention import ops


class ExternalAttention(ops.ZeroInitResidual):
    """``x + gamma * W_o (double_norm(W_q x M_k^T) M_v)``: the paper's external-attention unit,
    a 1x1 conv, the two memories (linear layers without bias), a 1x1 conv.

    The L1 step over softmax outputs is written as a softmax over S of the log-softmax over N,
    the same numbers without a division that a fully underflowed row would turn into 0 / 0.
    """

    def __init__(self, channels: int, *, memory_size: int = 64) -> None:
        super().__init__()
        if memory_size < 1:
            raise ValueError(f"external: memory_size must be >= 1, got {memory_size}")
        self.query = nn.Conv2d(channels, channels, kernel_size=1)
        self.memory_key = nn.Linear(channels, memory_size, bias=False)  # M_k, S x C
        self.memory_value = nn.Linear(memory_size, channels, bias=False)  # M_v, C x S
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x)
        logits = ops.einsum_fp32("bchw,sc->bhws", q, self.memory_key.weight)
        attn = logits.flatten(1, 2).log_softmax(dim=1).softmax(dim=2).to(q.dtype)  # (B, N, S)
        out = torch.einsum("bns,cs->bcn", attn, self.memory_value.weight.to(q.dtype))
        return self.proj(out.reshape(q.shape))
