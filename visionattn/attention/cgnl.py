"""Compact Generalized Non-local. Yue, Sun, Yuan, Zhou, Ding and Xu, Compact Generalized
Non-local Network, NeurIPS 2018, https://arxiv.org/abs/1810.13125.

The non-local block relates positions; the generalized one relates every (channel, position)
entry to every other: with ``theta, phi, g`` the flattened ``C' * N`` entries of three 1x1 convs,
``y_i = sum_j f(theta_i, phi_j) g_j``. A kernel ``f`` that factors as ``f(a, b) =
sum_p Phi_p(a) Phi_p(b)`` makes this compact and linear in ``C' N``:
``y_i = sum_p Phi_p(theta_i) z_p`` with ``z_p = sum_j Phi_p(phi_j) g_j``.

- dot product: ``f(a, b) = a b``, one term: ``y = theta * (phi . g)``;
- Gaussian RBF: ``f(a, b) = exp(-gamma (a - b)^2) = exp(-gamma a^2) exp(-gamma b^2)
  exp(2 gamma a b)``, the last factor replaced by its Taylor series to order P:
  ``Phi_p(a) = exp(-gamma a^2) sqrt((2 gamma)^p / p!) a^p``, p = 0..P.

The channels are split into ``groups`` and each group has its own compact sum. Output
``x + GroupNorm(W_z y)`` with ``W_z`` a grouped 1x1 conv; the GroupNorm weight starts at zero, so
the block is the identity at init.

The authors' code replaces the per-entry factor ``exp(-gamma (theta_i^2 + phi_j^2))`` by the
constant ``exp(-2 gamma)`` (exact only for unit entries; they found the exact one hard to train).
This file keeps the kernel's own factor, which stays compact and is within
``gamma * (theta_i^2 + phi_j^2)`` of that constant for the default ``gamma = 1e-4``.
"""

import math

import torch
from torch import nn

from visionattn.attention import ops

KERNELS = ("dot", "gaussian")


class CompactGeneralizedNonLocal(nn.Module):
    """``x + GN(W_z y)``, ``y_i = sum_j f(theta_i, phi_j) g_j`` over the ``C' N`` entries of each
    channel group, computed in the compact form (linear in ``C' N``) and in fp32: its sums grow
    like ``C' N |x|^3`` and would overflow fp16 before the GroupNorm brings them back."""

    kind = "context"

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 2,
        groups: int = 8,
        kernel: str = "dot",
        order: int = 3,
        rbf_gamma: float = 1e-4,
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"cgnl: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if order < 0:
            raise ValueError(f"cgnl: the Taylor order must be >= 0, got {order}")
        if reduction < 1:
            raise ValueError(f"cgnl: reduction must be >= 1, got {reduction}")
        inner = max(1, channels // reduction)
        if groups < 1 or inner % groups or channels % groups:
            works = [g for g in range(1, inner + 1) if inner % g == 0 and channels % g == 0]
            raise ValueError(
                f"cgnl: groups {groups} must divide both the {channels} channels and the {inner} "
                f"inner channels; groups that work here: {', '.join(map(str, works))}"
            )
        self.groups = groups
        self.kernel = kernel
        self.order = order
        self.rbf_gamma = rbf_gamma
        self.theta = nn.Conv2d(channels, inner, kernel_size=1, bias=False)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1, bias=False)
        self.g = nn.Conv2d(channels, inner, kernel_size=1, bias=False)
        self.out_conv = nn.Conv2d(inner, channels, kernel_size=1, groups=groups, bias=False)
        self.out_norm = nn.GroupNorm(groups, channels)
        nn.init.zeros_(self.out_norm.weight)
        if kernel == "gaussian":
            powers = torch.arange(order + 1, dtype=torch.float32)
            coeffs = [math.sqrt((2 * rbf_gamma) ** p / math.factorial(p)) for p in range(order + 1)]
            self.register_buffer("powers", powers[:, None], persistent=False)
            self.register_buffer("coeffs", torch.tensor(coeffs)[:, None], persistent=False)

    def _features(self, t: torch.Tensor) -> torch.Tensor:
        """(B, G, M) entries -> (B, G, P + 1, M): the kernel's feature map Phi_p."""
        t = t.float()[:, :, None, :]
        return torch.exp(-self.rbf_gamma * t.square()) * self.coeffs * t.pow(self.powers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta, phi, g = (
            conv(x).reshape(b, self.groups, -1) for conv in (self.theta, self.phi, self.g)
        )
        if self.kernel == "dot":
            y = ops.einsum_fp32("bgm,bg->bgm", theta, ops.einsum_fp32("bgm,bgm->bg", phi, g))
        else:
            z = ops.einsum_fp32("bgpm,bgm->bgp", self._features(phi), g)
            y = ops.einsum_fp32("bgpm,bgp->bgm", self._features(theta), z)
        with torch.autocast(x.device.type, enabled=False):
            y = y.reshape(b, -1, h, w).to(self.out_conv.weight.dtype)
            out = self.out_norm(self.out_conv(y))
        return x + out.to(x.dtype)
