"""Criss-Cross Attention. Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation,
ICCV 2019, https://arxiv.org/abs/1811.11721.

Each position attends to the H + W - 1 positions of its row and its column, so one pass costs
O(HW (H + W)) instead of non-local's O((HW)^2); two passes with shared weights (RCCA, R = 2) let
every position reach every other one.
"""

import torch
from torch import nn

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

    def context(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        height, width = x.shape[2], x.shape[3]
        # Position (i, j) against (r, j) on its column and against (i, s) on its row.
        column = ops.einsum_fp32("bcij,bcrj->bijr", q, k)
        row = ops.einsum_fp32("bcij,bcis->bijs", q, k)
        rows = torch.arange(height, device=x.device)
        centre = (rows[:, None] == rows[None, :])[:, None, :]  # not torch.eye: ONNX-friendly
        column = column.masked_fill(centre, float("-inf"))
        attn = ops.softmax(torch.cat([column, row], dim=-1), dim=-1, dtype=v.dtype)
        on_column, on_row = attn.split([height, width], dim=-1)
        return torch.einsum("bijr,bcrj->bcij", on_column, v) + torch.einsum(
            "bijs,bcis->bcij", on_row, v
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # RCCA: each pass is the paper's H' = H + gamma * CCA(H), with the same weights.
        for _ in range(self.recurrence):
            x = super().forward(x)
        return x
