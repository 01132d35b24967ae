"""Channelized axial attention. Huang, Kang, Jia, He and Liu, Channelized Axial Attention for
Semantic Segmentation -- Considering Channel Relation within Spatial Attention for Semantic
Segmentation, AAAI 2022, https://arxiv.org/abs/2101.07434.

Column and row attention maps are both computed from the same input (the paper's "parallel"
axial attention): ``A_col(i, j, m) = softmax_m(q_col(i, j) . k_col(m, j))`` over the ``H`` rows
``m`` of column ``j``, ``A_row(i, j, n)`` likewise over the ``W`` columns ``n`` of row ``i``;
no ``1 / sqrt(d)``, as in the authors' code. They are applied in turn, and channel attention acts
on the intermediate products before each sum:

    alpha(i, j, m) = A_col(i, j, m) V(m, j)
    s_col(i)       = sigmoid(W2 relu(W1 mean_{j,m} alpha(i, j, m)))
    Y_col(i, j)    = sum_m s_col(i) * alpha(i, j, m)
    beta(i, j, n)  = A_row(i, j, n) Y_col(i, n)
    s_row(j)       = sigmoid(W2' relu(W1' mean_{i,n} beta(i, j, n)))
    Y(i, j)        = sum_n s_row(j) * beta(i, j, n)

and the plugin returns ``x + gamma * Y`` with gamma zero at init.

The paper's grouped vectorisation bounds the memory of materialising ``alpha`` (``H`` times the
feature map) by looping over groups of query rows. Here it is not needed: the channel weights
``s_col(i)`` do not depend on the summed index ``m`` (nor on ``j``), so they factor out of the
sum, ``Y_col(i, j) = s_col(i) * (A_col V)(i, j)`` with ``mean_{j,m} alpha(i, j, m) =
sum_j (A_col V)(i, j) / (H W)``; ``alpha`` is never formed and both products are plain
attention calls, in the memory of axial attention. The test checks this against ``alpha``
built explicitly.

The channel MLP follows the paper's formula (one hidden layer, ReLU, no biases); its hidden
width ``C / 4`` is the authors' code's (which stacks five such hidden layers with leaky ReLU).
The authors' code also ties q = k and wraps the 1x1 projections in BN + ReLU; the paper's
formulas, followed here, have separate linear q, k, v.
"""

import torch
from torch import nn

from visionattn.attention import ops


class ChannelizedAxialAttention(ops.ZeroInitResidual):
    """``x + gamma * Y``: column then row attention (maps from the same ``x``), each followed by
    per-row (per-column) channel weights from the pooled attention products; gamma starts at
    zero."""

    def __init__(self, channels: int, *, qk_reduction: int = 8, reduction: int = 4) -> None:
        super().__init__()
        inner = max(1, channels // qk_reduction)
        self.query_column = nn.Conv2d(channels, inner, kernel_size=1)
        self.key_column = nn.Conv2d(channels, inner, kernel_size=1)
        self.query_row = nn.Conv2d(channels, inner, kernel_size=1)
        self.key_row = nn.Conv2d(channels, inner, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gate_column = _ChannelGate(channels, max(1, channels // reduction))
        self.gate_row = _ChannelGate(channels, max(1, channels // reduction))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        # Columns: (B, W, H, d), each of the W columns a sequence of H rows. Copied to unit
        # stride, as the fused kernels want (and dynamic-shape tracing trips on these views).
        q, k, v = (
            conv(x).permute(0, 3, 2, 1).contiguous()
            for conv in (self.query_column, self.key_column, self.value)
        )
        y = ops.attend(q, k, v, scale=1.0)  # (B, W, H, C): (A_col V)(i, j) at [:, j, i]
        y = y * self.gate_column(y.sum(1) / (height * width))[:, None]
        # Rows: (B, H, W, d), each of the H rows a sequence of W columns.
        q, k = (conv(x).permute(0, 2, 3, 1).contiguous() for conv in (self.query_row, self.key_row))
        y = ops.attend(q, k, y.transpose(1, 2), scale=1.0)  # (B, H, W, C)
        y = y * self.gate_row(y.sum(1) / (height * width))[:, None]
        return y.permute(0, 3, 1, 2)


class _ChannelGate(nn.Module):
    """``sigmoid(W2 relu(W1 p))``: one weight per channel from a pooled vector ``p``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(pooled).relu()).sigmoid()
