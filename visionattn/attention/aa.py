"""Attention-augmented convolution. Bello, Zoph, Vaswani, Shlens and Le, Attention Augmented
Convolutional Networks, ICCV 2019, https://arxiv.org/abs/1904.09925.

``AAConv(X) = Concat[Conv(X), MHA(X)]`` (eq. 5): a convolution to ``F_out - d_v`` channels next
to multi-head self-attention to ``d_v`` channels, with ``d_k = kappa F_out`` and
``d_v = upsilon F_out``. Per head, ``O_h = softmax((Q K^T + S_H + S_W) / sqrt(d_k^h)) V`` with
relative height and width logits ``S_H``, ``S_W`` from tables shared across heads (eq. 3-4);
``MHA = Concat[O_1..O_Nh] W^O``. Both ``d_k`` and ``d_v`` are rounded to multiples of the heads,
and keys get at least 20 dimensions per head, as in the paper's experiments.

Strided, the convolution strides and the attention runs on the input downsampled by the paper's
own operator for attention inputs (3x3 average pooling with stride 2, section 3.2), so both
branches land on ``ceil(H/2) x ceil(W/2)`` without attention at full resolution. The relative
tables are sized to that map, so the plugin is built for one feature size.
"""

from collections.abc import Sequence

import torch
from torch import nn

from visionattn.attention import ops
from visionattn.attention.relative_position import RelativePosition2d


def _ceil_div(size: int, stride: int) -> int:
    return -(-size // stride)


class AttentionAugmentedConv(nn.Module):
    """``Concat[Conv(x), MHA(x)]``: a ``kernel_size`` conv for ``F_out - d_v`` channels and
    relative multi-head self-attention for the last ``d_v``.

    Args:
        channels: input channels ``F_in``.
        feat_size: the input's ``(H, W)``; the relative tables are sized to the attention's map.
        out_channels: ``F_out`` (default ``channels``).
        stride: the conv's stride; the attention's input is average-pooled (3x3, stride 2) to
            match.
        kernel_size: the conv's kernel (3, the conv it augments).
        kappa: ``d_k / F_out``, key depth ratio (0.2: the paper's kappa = 2 upsilon = 0.2).
        upsilon: ``d_v / F_out``, the fraction of output channels from attention (0.1).
        num_heads: ``N_h`` (8).
        min_key_dim: the least key depth per head (20).
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        feat_size: Sequence[int],
        out_channels: int | None = None,
        stride: int = 1,
        kernel_size: int = 3,
        kappa: float = 0.2,
        upsilon: float = 0.1,
        num_heads: int = 8,
        min_key_dim: int = 20,
        chunk: int | None = None,
    ) -> None:
        super().__init__()
        ops.check_chunk("aa", chunk)
        self.chunk = chunk
        out_channels = out_channels or channels
        key_dim = max(min_key_dim, round(kappa * out_channels / num_heads))
        value_dim = max(1, round(upsilon * out_channels / num_heads))
        self.dk, self.dv = num_heads * key_dim, num_heads * value_dim
        if self.dv > out_channels:
            raise ValueError(
                f"aa: upsilon {upsilon} with {num_heads} heads gives d_v={self.dv} attention "
                f"channels, more than out_channels {out_channels}; use fewer heads (at most "
                f"{out_channels}) or a smaller upsilon"
            )
        if stride not in (1, 2):
            raise ValueError(f"aa: stride must be 1 or 2, got {stride}")
        self.num_heads, self.stride = num_heads, stride
        self.out_channels = out_channels
        self.conv = (
            nn.Conv2d(
                channels,
                out_channels - self.dv,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=False,
            )
            if out_channels > self.dv
            else None  # fully attentional (upsilon = 1)
        )
        self.downsample = (
            nn.AvgPool2d(3, 2, padding=1, count_include_pad=False) if stride > 1 else nn.Identity()
        )
        self.qkv = nn.Conv2d(channels, 2 * self.dk + self.dv, 1, bias=False)
        self.proj = nn.Conv2d(self.dv, self.dv, 1, bias=False)  # W^O
        self.feat_size = (int(feat_size[0]), int(feat_size[1]))
        attn_size = tuple(_ceil_div(s, stride) for s in self.feat_size)
        self.rel_pos = RelativePosition2d(key_dim, attn_size, attn_size)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``MHA(x)`` on the (pooled) input: ``(B, d_v, H', W')``."""
        batch, _, height, width = x.shape
        heads, dkh, dvh = self.num_heads, self.dk // self.num_heads, self.dv // self.num_heads
        q, k, v = self.qkv(x).split([self.dk, self.dk, self.dv], dim=1)
        q = q.reshape(batch, heads, dkh, height, width).permute(0, 1, 3, 4, 2)
        k = k.reshape(batch, heads, dkh, height * width).transpose(-1, -2)
        v = v.reshape(batch, heads, dvh, height * width).transpose(-1, -2)
        rel = self.rel_pos.axes(q) * dkh**-0.5  # (S_H + S_W) / sqrt(d_k^h); SDPA scales Q K^T
        out = ops.attend(q.flatten(2, 3), k, v, rel, chunk=self.chunk)  # (B, heads, HW, dvh)
        out = out.transpose(-1, -2).reshape(batch, self.dv, height, width)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.feat_size:
            fh, fw = self.feat_size
            raise ValueError(
                f"aa: built for a {fh}x{fw} feature map (its relative position tables), got "
                f"{x.shape[-2]}x{x.shape[-1]}; build the model for this input size (img_size)"
            )
        attn = self.attention(self.downsample(x))
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)
