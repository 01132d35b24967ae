"""Non-local block. Wang, Girshick, Gupta and He, Non-local Neural Networks, CVPR 2018,
https://arxiv.org/abs/1711.07971.

``y_i = 1 / C(x) * sum_j f(x_i, x_j) g(x_j)`` over every position ``j``, then
``z = x + BN(W_z y)`` with the BN's weight zero at init, as the paper does, so the block starts as
the identity. The four pairwise functions of the paper's Sec. 3.2:

- ``gaussian``: ``f = exp(x_i^T x_j)``, ``C = sum_j f``: a softmax over the raw features;
- ``embedded_gaussian``: ``f = exp(theta(x_i)^T phi(x_j))``, ``C = sum_j f``: self-attention;
- ``dot_product``: ``f = theta(x_i)^T phi(x_j)``, ``C = N``;
- ``concatenation``: ``f = ReLU(w_f^T [theta(x_i), phi(x_j)])``, ``C = N``.

As in the paper's Sec. 3.3, theta, phi and g have half the input's channels, and a 2x2 max-pool
after phi and g subsamples the positions attended to (``sub_sample``); ``N`` is then the number
of those positions. The paper's "simplified" form (Q = K = V = x) is not one of these modes.
"""

import torch
from torch import nn

from visionattn.attention import ops

MODES = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")


class NonLocal(nn.Module):
    """``x + BN(W_z y)``, ``y_i = 1 / C(x) * sum_j f(x_i, x_j) g(x_j)``, ``f`` set by ``mode``.

    The softmax modes go through :func:`ops.attend` with no ``1 / sqrt(d)``: the paper has none.
    ``dot_product`` never forms the ``N x N`` matrix: ``theta (phi^T g) / N`` is the same product
    in linear memory. Logits and products without a softmax are computed in fp32, so fp16
    autocast cannot overflow them. The max-pool rounds up (``ceil_mode``): an odd border row is
    pooled rather than dropped, and a 1x1 map still has one position to attend to.
    """

    kind = "context"

    def __init__(
        self,
        channels: int,
        *,
        mode: str = "embedded_gaussian",
        reduction: int = 2,
        sub_sample: bool = True,
        chunk: int | None = None,
    ) -> None:
        super().__init__()
        ops.check_chunk("nonlocal", chunk)
        self.chunk = chunk
        if mode not in MODES:
            raise ValueError(f"nonlocal: mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        inner = max(1, channels // reduction)
        self.g = nn.Conv2d(channels, inner, kernel_size=1)
        if mode != "gaussian":  # the plain Gaussian compares the raw features
            self.theta = nn.Conv2d(channels, inner, kernel_size=1)
            self.phi = nn.Conv2d(channels, inner, kernel_size=1)
        if mode == "concatenation":
            self.w_f = nn.Linear(2 * inner, 1, bias=False)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if sub_sample else nn.Identity()
        self.w_z = nn.Conv2d(inner, channels, kernel_size=1, bias=False)
        self.out_norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.out_norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        values = self.pool(self.g(x)).flatten(2).transpose(1, 2)  # (B, M, inner)
        if self.mode == "gaussian":
            queries, keys = x, self.pool(x)
        else:
            queries, keys = self.theta(x), self.pool(self.phi(x))
        queries = queries.flatten(2).transpose(1, 2)  # (B, N, d)
        keys = keys.flatten(2).transpose(1, 2)  # (B, M, d)
        positions = keys.shape[1]
        if self.mode in ("gaussian", "embedded_gaussian"):
            y = ops.attend(
                queries[:, None], keys[:, None], values[:, None], scale=1.0, chunk=self.chunk
            )[:, 0]
        elif self.mode == "dot_product":
            context = ops.einsum_fp32("bmd,bme->bde", keys, values)
            y = ops.einsum_fp32("bnd,bde->bne", queries, context) / positions
        else:
            w_theta, w_phi = self.w_f.weight[0].chunk(2)
            pairs = ops.einsum_fp32("bnd,d->bn", queries, w_theta)[:, :, None]
            pairs = pairs + ops.einsum_fp32("bmd,d->bm", keys, w_phi)[:, None, :]
            y = ops.einsum_fp32("bnm,bme->bne", pairs.relu(), values) / positions
        y = y.to(values.dtype).transpose(1, 2).reshape(batch, -1, height, width)
        return x + self.out_norm(self.w_z(y))
