"""Multi-head self-attention of the Bottleneck Transformer. Srinivas, Lin, Parmar, Shlens, Abbeel
and Vaswani, Bottleneck Transformers for Visual Recognition (BoTNet), CVPR 2021,
https://arxiv.org/abs/2101.11605.

The 3x3 conv of a bottleneck becomes all-to-all attention over the feature map (fig. 4): 1x1
projections to q, k, v, logits ``q k^T + q r^T`` with ``r`` the split relative height and width
embeddings, softmax, times v; no output projection (the block's next 1x1 conv mixes the heads).
The logits are divided by ``sqrt(d)`` as in the AA paper's relative attention that BoTNet reuses.
The relative tables are sized to one feature map, so the plugin is built for it. Attention does
not stride: a stride-2 block pools the attention's output with 2x2 average pooling, as the paper
does in the first block of c5.
"""

from collections.abc import Sequence

import torch
from torch import nn

from visionattn.attention import ops
from visionattn.attention.relative_position import RelativePosition2d


class BottleneckAttention(nn.Module):
    """``softmax((q k^T + q r^T) / sqrt(d)) v`` per head over all ``H*W`` positions, then 2x2
    average pooling when strided.

    Args:
        channels: input channels.
        feat_size: the input's ``(H, W)``; the relative tables hold ``2H-1`` and ``2W-1`` rows.
        out_channels: output channels (default ``channels``), the depth of q, k and v.
        stride: the ``stride x stride`` average pool after attention; 1 for none.
        num_heads: attention heads (4 in the paper).
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        feat_size: Sequence[int],
        out_channels: int | None = None,
        stride: int = 1,
        num_heads: int = 4,
        chunk: int | None = None,
    ) -> None:
        super().__init__()
        ops.check_chunk("bot", chunk)
        self.chunk = chunk
        out_channels = out_channels or channels
        if out_channels % num_heads:
            heads = [n for n in range(1, out_channels + 1) if out_channels % n == 0]
            raise ValueError(
                f"bot: num_heads {num_heads} must divide out_channels {out_channels}; "
                f"heads that work: {', '.join(map(str, heads))}"
            )
        self.feat_size = (int(feat_size[0]), int(feat_size[1]))
        self.num_heads, self.out_channels = num_heads, out_channels
        self.qkv = nn.Conv2d(channels, 3 * out_channels, 1, bias=False)
        self.rel_pos = RelativePosition2d(out_channels // num_heads, self.feat_size, self.feat_size)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        if (height, width) != self.feat_size:
            fh, fw = self.feat_size
            raise ValueError(
                f"bot: built for a {fh}x{fw} feature map (its relative position tables), got "
                f"{height}x{width}; build the model for this input size (img_size)"
            )
        heads, dim = self.num_heads, self.out_channels // self.num_heads
        qkv = self.qkv(x).reshape(batch, 3, heads, dim, height, width)
        q, k, v = qkv.permute(1, 0, 2, 4, 5, 3).unbind(0)  # (B, heads, H, W, d)
        rel = self.rel_pos.axes(q) * dim**-0.5  # (B, heads, HW, H + W); SDPA scales q k^T
        out = ops.attend(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3), rel, chunk=self.chunk)
        out = out.transpose(-1, -2).reshape(batch, self.out_channels, height, width)
        return self.pool(out)
