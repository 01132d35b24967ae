"""Criss-Cross Attention. Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation,
ICCV 2019, https://arxiv.org/abs/1811.11721.

Each position attends to the H + W - 1 positions of its row and its column, so one pass costs
O(HW (H + W)) instead of non-local's O((HW)^2); two passes with shared weights (RCCA, R = 2) let
every position reach every other one.

The paper's memory claim (1/11 of a non-local block's) rests on its CUDA kernel, which keeps
little for the backward pass. Autograd through the plain formula would keep the (H + W)-wide
weights, v, its permuted copies and the context of every pass, so a pass here is one autograd
function that keeps q, k and one log-sum-exp per position, and recomputes the weights and v in
backward: v is as wide as the input, the weights cost a tenth of the pass at ``c = C / 8``.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from visionattn.attention import ops


class CrissCrossAttention(ops.ZeroInitResidual):
    """``x <- x + gamma * sum_{u in row(i) + col(i)} softmax_u(q_i . k_u) v_u``, ``recurrence``
    times with the same weights (q, k of C / ``reduction`` channels, v of C; no 1/sqrt(d) scaling,
    as in the paper).

    The column and row energies are computed separately (memory O(HW (H + W)), not O((HW)^2))
    and share one softmax over their concatenation; the position itself lies on both, so it is
    masked out of the column branch and counted once.
    """

    def __init__(self, channels: int, *, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"ccnet: reduction must be >= 1, got {reduction}")
        if recurrence < 1:
            raise ValueError(
                f"ccnet: recurrence must be >= 1 (2 reaches every position), got {recurrence}"
            )
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, kernel_size=1)
        self.key = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.recurrence = recurrence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # RCCA: each pass is the paper's H' = H + gamma * CCA(H), with the same weights.
        for _ in range(self.recurrence):
            q, k = self.query(x), self.key(x)
            if torch.is_grad_enabled():
                x = CrissCrossPass.apply(x, q, k, self.value.weight, self.value.bias, self.gamma)
            else:  # inference (and export, FLOP counting): the same formula, nothing kept
                x = criss_cross_pass(x, q, k, self.value(x), self.gamma)[0]
        return x


def criss_cross_pass(
    x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x + gamma * CCA(q, k, v)`` and the log-sum-exp of each position's energies ``(B, H, W)``.
    Energies and softmax in fp32 whatever autocast says; the weights meet v in v's dtype."""
    with torch.autocast(x.device.type, enabled=False):
        column, row = _energies(q, k)
        # One softmax over the H + W energies of a position, split in its two halves.
        lse = torch.logaddexp(column.logsumexp(-1).transpose(1, 2), row.logsumexp(-1))
        on_column, on_row = _weights(column, row, lse)
        context = _gather(on_column.to(v.dtype), on_row.to(v.dtype), v)
        return torch.addcmul(x, gamma, context), lse


def _products(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``column[n, j, i, r] = a_(i, j) . b_(r, j)`` and ``row[n, i, j, s] = a_(i, j) . b_(i, s)``
    of two ``(N, C, H, W)`` maps, in fp32 (fp64 stays fp64)."""
    a, b = ops.at_least_fp32(a), ops.at_least_fp32(b)
    return a.permute(0, 3, 2, 1) @ b.permute(0, 3, 1, 2), a.permute(0, 2, 3, 1) @ b.permute(
        0, 2, 1, 3
    )


def _energies(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The column and row energies, the centre of the column (``r = i``) at -inf: it is on the
    row too, and counted there."""
    column, row = _products(q, k)
    rows = torch.arange(column.shape[-1], device=column.device)
    centre = rows[:, None] == rows[None, :]  # not a filled diagonal view: ONNX-friendly
    return column.masked_fill_(centre, float("-inf")), row


def _weights(
    column: torch.Tensor, row: torch.Tensor, lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax weights of both halves, in place of their energies."""
    return column.sub_(lse.transpose(1, 2)[..., None]).exp_(), row.sub_(lse[..., None]).exp_()


def _gather(on_column: torch.Tensor, on_row: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_r on_column[n, j, i, r] v[n, :, r, j] + sum_s on_row[n, i, j, s] v[n, :, i, s]``,
    shaped like ``v`` (not contiguous)."""
    context = (v.permute(0, 3, 1, 2) @ on_column.transpose(-1, -2)).permute(0, 2, 3, 1)
    return context.add_((v.permute(0, 2, 1, 3) @ on_row.transpose(-1, -2)).permute(0, 2, 1, 3))


class CrissCrossPass(torch.autograd.Function):
    """One pass, ``x + gamma * CCA(q, k, conv1x1(x; weight, bias))``, keeping x, q, k and the
    log-sum-exp for backward.

    With ``P`` the weights and ``dP = grad . v`` (the weights' gradient, gamma left out),
    softmax's backward is ``dE = gamma P (dP - D)`` with ``D = sum_u P_u dP_u`` per position, and
    gamma's own gradient ``sum(grad * context)`` is ``sum(D)``: no context is kept for it. Every
    product in backward is a criss-cross one: ``dq = gather(dE, k)``, ``dk = gather(dE^T, q)``,
    ``dv = gather(gamma P^T, grad)``.
    """

    @staticmethod
    def forward(ctx, x, q, k, weight, bias, gamma):
        v = F.conv2d(x, weight, bias)  # under the caller's autocast, as self.value(x) would be
        y, lse = criss_cross_pass(x, q, k, v, gamma)
        ctx.save_for_backward(x, q, k, weight, bias, gamma, lse)
        ctx.value_dtype = v.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, q, k, weight, bias, gamma, lse = ctx.saved_tensors
        dtype = ctx.value_dtype
        with torch.autocast(grad.device.type, enabled=False):
            x_, weight_ = x.to(dtype), weight.to(dtype)
            g = grad.to(dtype)
            d_column, d_row = _products(g, F.conv2d(x_, weight_, bias.to(dtype)))
            on_column, on_row = _weights(*_energies(q, k), lse)
            total = (on_column * d_column).sum(-1).transpose(1, 2) + (on_row * d_row).sum(-1)
            grad_gamma = total.sum().reshape(gamma.shape).to(gamma.dtype)
            d_column = d_column.sub_(total.transpose(1, 2)[..., None]).mul_(on_column * gamma)
            d_row = d_row.sub_(total[..., None]).mul_(on_row * gamma)
            grad_q = _gather(d_column, d_row, ops.at_least_fp32(k)).to(q.dtype)
            grad_k = _gather(d_column.mT, d_row.mT, ops.at_least_fp32(q)).to(k.dtype)
            del d_column, d_row
            grad_v = _gather(
                (on_column * gamma).mT.to(dtype), (on_row * gamma).mT.to(dtype), g
            ).contiguous()
            # The value conv's own backward (1x1, so matmuls over channels).
            grad_x = grad.to(x.dtype) + F.conv2d(grad_v, weight_.transpose(0, 1)).to(x.dtype)
            grad_weight = torch.einsum("nohw,nihw->oi", grad_v, x_).reshape(weight.shape)
            grad_bias = grad_v.sum((0, 2, 3))
        return (
            grad_x,
            grad_q,
            grad_k,
            grad_weight.to(weight.dtype),
            grad_bias.to(bias.dtype),
            grad_gamma,
        )
