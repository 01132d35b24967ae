"""Stand-alone local self-attention. Ramachandran, Parmar, Vaswani, Bello, Levskaya and Shlens,
Stand-Alone Self-Attention in Vision Models, NeurIPS 2019, https://arxiv.org/abs/1906.05909.

Each pixel ``(i, j)`` attends to the ``k x k`` window centred on it (eq. 3):
``y_ij = sum_{a,b} softmax_ab(q_ij . k_ab + q_ij . r_{a-i, b-j}) v_ab``, where ``r_{a-i, b-j}``
concatenates a learned row-offset embedding (the first half of the channels) and a column-offset
embedding (the second half); like the keys, the concatenation is split across the heads. The
paper's logits carry no ``1/sqrt(d)``, so none is applied. Window positions outside the map are
masked (they hold zero padding, not pixels). A strided layer is attention followed by 2x2 average
pooling with stride 2, as the paper replaces strided convolutions.
"""

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import ops


class StandAloneSelfAttention(nn.Module):
    """Multi-head attention over the ``k x k`` neighbourhood of every pixel with relative row and
    column embeddings, then average pooling when strided.

    Args:
        channels: input channels.
        out_channels: output channels (default ``channels``): the depth of queries, keys and
            values, split across the heads.
        stride: the 2x2 (``stride x stride``) average pool after attention; 1 for none.
        kernel_size: ``k``, the side of the window (7 in the paper), odd.
        num_heads: attention heads ``N`` (8 in the paper).
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        stride: int = 1,
        kernel_size: int = 7,
        num_heads: int = 8,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"sasa: kernel_size must be odd (a centred window), got {kernel_size}")
        if out_channels % num_heads or out_channels % 2:
            heads = [n for n in range(1, out_channels + 1) if out_channels % n == 0]
            raise ValueError(
                f"sasa: out_channels {out_channels} must be even (half row, half column "
                f"embeddings) and divisible by num_heads {num_heads}; heads that work: "
                f"{', '.join(map(str, heads))}"
            )
        self.kernel_size, self.num_heads = kernel_size, num_heads
        self.out_channels = out_channels
        self.qkv = nn.Conv2d(channels, 3 * out_channels, 1, bias=False)
        half = out_channels // 2
        self.rel_rows = nn.Parameter(torch.randn(kernel_size, half) * half**-0.5)
        self.rel_cols = nn.Parameter(torch.randn(kernel_size, half) * half**-0.5)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def _offset_embeddings(self) -> torch.Tensor:
        """``r_{a,b} = [r_rows[a], r_cols[b]]`` for every window offset, split into heads:
        ``(heads, k*k, d)``."""
        k = self.kernel_size
        rows = self.rel_rows[:, None, :].expand(k, k, -1)
        cols = self.rel_cols[None, :, :].expand(k, k, -1)
        r = torch.cat([rows, cols], dim=-1).reshape(k * k, self.num_heads, -1)
        return r.transpose(0, 1)

    def _inside(self, height: int, width: int, device) -> torch.Tensor:
        """True where a window position lies inside the map: ``(H*W, k*k)``."""
        k = self.kernel_size
        offsets = torch.arange(k, device=device) - k // 2
        rows = torch.arange(height, device=device)[:, None] + offsets
        cols = torch.arange(width, device=device)[:, None] + offsets
        rows, cols = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        return (rows[:, None, :, None] & cols[None, :, None, :]).flatten(0, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        k, heads = self.kernel_size, self.num_heads
        dim = self.out_channels // heads
        q, keys, values = self.qkv(x).chunk(3, dim=1)

        q = q.reshape(batch, heads, dim, height * width).transpose(-1, -2)  # (B, n, HW, d)

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B, n, HW, k*k, d), zero outside
            t = F.unfold(t, kernel_size=k, padding=k // 2)
            return t.reshape(batch, heads, dim, k * k, height * width).permute(0, 1, 4, 3, 2)

        rel = ops.einsum_fp32("bnqd,nkd->bnqk", q, self._offset_embeddings())
        bias = rel.masked_fill(~self._inside(height, width, x.device), float("-inf"))
        # One query a row, heads and positions on one batch axis (4D, as ONNX's exporter wants).
        q, bias = q.unsqueeze(-2).flatten(1, 2), bias.unsqueeze(-2).flatten(1, 2)
        keys, values = windows(keys).flatten(1, 2), windows(values).flatten(1, 2)
        out = ops.attend(q, keys, values, bias, scale=1.0)  # (B, heads*HW, 1, d)
        out = out.reshape(batch, heads, height * width, dim).transpose(-1, -2)
        out = out.reshape(batch, self.out_channels, height, width)
        return self.pool(out)
