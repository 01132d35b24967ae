"""Shared pieces of the attention plugins: the softmax-attention call, fp16-safe logits, and
the zero-init residual of the context plugins.

Plugins whose attention is ``softmax(q k^T) v`` call :func:`attend`, which is PyTorch's
``scaled_dot_product_attention``: fused kernels with O(N) memory where the backend has one, and
the scaling done so that fp16 logits do not overflow. Plugins that need the logits themselves
(masked rows, sums over two axes, double normalisation) build them with :func:`einsum_fp32`, in fp32
whatever autocast says.
"""

import torch
import torch.nn.functional as F
from torch import nn


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over the last two axes: q ``(..., N, d)``, k
    ``(..., M, d)``, v ``(..., M, e)``, bias broadcastable to ``(..., N, M)`` (a bool bias is a
    mask, True where attention is allowed). The default scale is ``1 / sqrt(d)``."""
    if bias is not None and bias.dtype != torch.bool:
        bias = bias.to(q.dtype)
    # The fused kernels need a unit stride along the last axis; a (B, C, H, W) map viewed as
    # (B, N, C) has stride N there, and would silently take the O(N^2)-memory math kernel.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def einsum_fp32(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """``torch.einsum(equation, *operands)`` in fp32 (fp64 stays fp64), also under autocast, for
    attention logits and other products that a half-precision matmul could overflow."""
    with torch.autocast(operands[0].device.type, enabled=False):
        return torch.einsum(equation, *(op.to(_at_least_fp32(op.dtype)) for op in operands))


def softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Softmax computed in fp32 (or fp64), returned as ``dtype`` (default: the input's)."""
    return x.to(_at_least_fp32(x.dtype)).softmax(dim).to(dtype or x.dtype)


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class ZeroInitResidual(nn.Module):
    """``x + gamma * f(x)`` with a learned scalar ``gamma`` that starts at zero, the residual of
    SAGAN and DANet that the context plugins share: a pretrained backbone computes exactly what
    it computed before the plugin was added. Subclasses write ``context(x)`` = f(x)."""

    kind = "context"

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.context(x)
