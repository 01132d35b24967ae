"""Fastformer. Wu, Wu, Qi, Huang and Xie, Fastformer: Additive Attention Can Be All You Need,
arXiv 2021, https://arxiv.org/abs/2108.09084.

Additive attention, linear in the number of positions N. Per head (d channels):
``alpha = softmax_i(w_q . q_i / sqrt(d))`` pools the queries into a global query
``q = sum_i alpha_i q_i``; ``p_i = q * k_i``; ``beta = softmax_i(w_k . p_i / sqrt(d))`` pools those
into a global key ``k = sum_i beta_i p_i``; ``u_i = k * v_i``; the output is ``W_r u_i + q_i``.
Each pooling is attention with one learned query (``w_q`` or ``w_k``) over the N positions, so it
goes through :func:`ops.attend`.
"""

import math

import torch
from torch import nn

from visionattn.attention import ops


class Fastformer(ops.ZeroInitResidual):
    """``x + gamma * (W_r (k * v) + q)`` with the global key ``k`` pooled from ``q * K`` and the
    global query ``q`` pooled from Q by additive attention; ``heads`` heads.

    The interactions are products of two and three projections of x; they run in fp32 (with
    O(N C) cost), since fp16 overflows them for features of a few hundred.
    """

    def __init__(self, channels: int, *, heads: int = 16) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            works = [h for h in range(1, channels + 1) if channels % h == 0]
            raise ValueError(
                f"fastformer: heads {heads} must divide the {channels} channels; heads that work "
                f"here: {', '.join(map(str, works))}"
            )
        self.heads = heads
        head_dim = channels // heads
        self.query = nn.Conv2d(channels, channels, kernel_size=1)
        self.key = nn.Conv2d(channels, channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.transform = nn.Conv2d(channels, channels, kernel_size=1)  # W_r
        bound = 1 / math.sqrt(head_dim)  # nn.Linear's default init for a d -> 1 scorer
        self.query_score = nn.Parameter(torch.empty(heads, 1, head_dim).uniform_(-bound, bound))
        self.key_score = nn.Parameter(torch.empty(heads, 1, head_dim).uniform_(-bound, bound))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        queries, keys, values = self.query(x), self.key(x), self.value(x)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, N, d), fp32
            return t.float().reshape(b, self.heads, c // self.heads, h * w).transpose(2, 3)

        with torch.autocast(x.device.type, enabled=False):
            q, k, v = split(queries), split(keys), split(values)
            global_q = ops.attend(self.query_score.float().expand(b, -1, -1, -1), q, q)
            p = global_q * k
            global_k = ops.attend(self.key_score.float().expand(b, -1, -1, -1), p, p)
            u = (global_k * v).transpose(2, 3).reshape(b, c, h, w)
            dtype = self.transform.weight.dtype
            return self.transform(u.to(dtype)) + queries.to(dtype)
