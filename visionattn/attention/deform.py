"""Deformable convolution. Dai et al., Deformable Convolutional Networks, ICCV 2017,
https://arxiv.org/abs/1703.06211, and Zhu et al., Deformable ConvNets v2: More Deformable, Better
Results, CVPR 2019, https://arxiv.org/abs/1811.11168.

The sampling itself is ``torchvision.ops.deform_conv2d``; this module predicts the offsets and the
modulation from the input and keeps the conv weight under the plain conv's key (``weight``), so
a pretrained 3x3 conv loads into it unchanged.
"""

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

_KERNEL = 3


class DeformableConv(nn.Module):
    """A 3x3 conv that samples ``x`` at ``p + p_k + dp_k(p)`` by bilinear interpolation (zero
    outside the map), each sample scaled by a modulation ``m_k(p)`` (DCNv2 eq. 3):
    ``y(p) = sum_k w_k * m_k(p) * x(p + p_k + dp_k(p))``. One plain 3x3 conv on ``x`` (same
    stride) predicts the 2 * 9 offsets ``(dy, dx)`` and the 9 modulation logits.

    The offset conv starts at zero, so at init the offsets are 0 and the layer is the plain 3x3
    conv. The modulation is ``2 * sigmoid``, in ``[0, 2]`` and 1 at init, as in the authors'
    released DCNv2 operator (the paper's text says ``sigmoid``, 0.5 at init, which would halve
    a pretrained conv's output). ``modulated=False`` is DCNv1: offsets only.
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        stride: int = 1,
        modulated: bool = True,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.stride = stride
        self.modulated = modulated
        self.weight = nn.Parameter(torch.empty(out_channels, channels, _KERNEL, _KERNEL))
        # nn.Conv2d's default init, for the same start as the conv this replaces.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        taps = _KERNEL * _KERNEL
        self.offset = nn.Conv2d(
            channels, (3 if modulated else 2) * taps, _KERNEL, stride=stride, padding=1
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        predicted = self.offset(x)
        taps = _KERNEL * _KERNEL
        # torchvision's kernels have no bf16 and no CPU autocast rule: run them in x's dtype, or
        # fp32 for bf16, with every operand in that dtype.
        dtype = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
        with torch.autocast(x.device.type, enabled=False):
            offset, mask = predicted[:, : 2 * taps].to(dtype), None
            if self.modulated:
                mask = 2 * predicted[:, 2 * taps :].to(dtype).sigmoid()
            out = deform_conv2d(
                x.to(dtype),
                offset,
                self.weight.to(dtype),
                stride=self.stride,
                padding=_KERNEL // 2,
                mask=mask,
            )
        return out.to(x.dtype)
