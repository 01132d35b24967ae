"""Efficient attention. Shen, Zhang, Zhao, Yi and Li, Efficient Attention: Attention with Linear
Complexities, WACV 2021, https://arxiv.org/abs/1812.01243.

``E(Q, K, V) = rho_q(Q) (rho_k(K)^T V)``: the keys are softmaxed over the N positions, the queries
over their d_k channels, and the d_k x d_v context ``rho_k(K)^T V`` is formed first, so memory
and compute are linear in N. With these normalisations it equals dot-product attention only up
to the normalisation change (exactly so with the scaling normalisation ``1 / N``).
"""

import torch
from torch import nn

from visionattn.attention import ops


class EfficientAttention(ops.ZeroInitResidual):
    """``x + gamma * W_r [softmax_c(Q_h) (softmax_N(K_h)^T V_h)]_h``: per head h, the context
    ``softmax_N(K_h) V_h^T`` (d_k x d_v), read out by each position's channel-softmaxed query;
    the heads are concatenated and reprojected to C by a 1x1 conv.

    Keys and values have C / ``reduction`` channels: the paper offers the module as a drop-in
    replacement for the non-local block, whose inner width is C / 2. The paper's module is a
    single head; ``heads`` splits the channels as the authors' code does.
    """

    def __init__(self, channels: int, *, reduction: int = 2, heads: int = 1) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"efficient: reduction must be >= 1, got {reduction}")
        inner = max(1, channels // reduction)
        if heads < 1 or inner % heads:
            works = [h for h in range(1, inner + 1) if inner % h == 0]
            raise ValueError(
                f"efficient: heads {heads} must divide the {inner} key and value channels; heads "
                f"that work here: {', '.join(map(str, works))}"
            )
        self.heads = heads
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, inner, kernel_size=1)
        self.reprojection = nn.Conv2d(inner, channels, kernel_size=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, C', H, W) -> (B, heads, d, N)
            return t.reshape(b, self.heads, -1, h * w)

        v = split(self.value(x))
        k = ops.softmax(split(self.key(x)), dim=3, dtype=v.dtype)  # over the positions
        q = ops.softmax(split(self.query(x)), dim=2, dtype=v.dtype)  # over each head's channels
        context = torch.einsum("bhkn,bhvn->bhkv", k, v)
        out = torch.einsum("bhkv,bhkn->bhvn", context, q)
        return self.reprojection(out.reshape(b, -1, h, w))
