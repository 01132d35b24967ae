"""GCNet: Global Context block. Cao, Xu, Lin, Wei and Hu, "GCNet: Non-local Networks Meet
Squeeze-Excitation Networks and Beyond", ICCV Workshops 2019, https://arxiv.org/abs/1904.11492.

The GC-ResNet-50 of the paper has one block in every bottleneck of stages 2-4 (c3-c5), after the
last 1x1 conv, which is where the gates sit here: see configs/attn/gc.yaml.
"""

import torch
from torch import nn

from visionattn.attention import ops


class GlobalContext(nn.Module):
    """``z_i = x_i + W_v2 relu(LN(W_v1 sum_j a_j x_j))`` with ``a = softmax_j(W_k x_j)``: one
    attention-pooled context vector (a single learned query over all positions), transformed by
    a ``C -> C/r -> C`` bottleneck with LayerNorm, added to every position.

    The pooling is the paper's two products: logits ``W_k x`` (a 1x1 conv to one channel),
    then ``x a^T`` on the ``(C, HW)`` map as it lies; a one-query attention call would first copy
    the map into ``(HW, C)`` (3x the forward time on a CPU). The softmax is in fp32, also under
    autocast. ``W_k`` has no bias: a constant logit leaves the softmax unchanged. The last conv
    starts at zero, so a fresh block returns its input.

    Args:
        channels: input channels C.
        reduction: r, the bottleneck ratio of the transform (the paper's default; it also tries 4).
    """

    kind = "gate"

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"gc: reduction must be at least 1, got {reduction}")
        hidden = channels // reduction
        if hidden < 2:
            # LayerNorm over a single value outputs its bias whatever the input: the block would
            # add a constant and learn nothing from the context.
            raise ValueError(
                f"gc: channels // reduction = {channels} // {reduction} leaves {hidden} hidden "
                f"channels, and the LayerNorm needs 2 or more; use reduction <= {channels // 2}"
            )
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1, bias=False)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = ops.softmax(self.conv_mask(x).flatten(2), dim=-1)  # (B, 1, HW)
        context = x.flatten(2) @ weights.transpose(1, 2)  # (B, C, 1)
        return x + self.transform(context.unsqueeze(-1))
