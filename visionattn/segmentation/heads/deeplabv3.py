"""DeepLabV3's head, atrous spatial pyramid pooling with image-level features. Chen, Papandreou,
Schroff and Adam, Rethinking Atrous Convolution for Semantic Image Segmentation, 2017,
https://arxiv.org/abs/1706.05587 (Sec. 3.3).

Five parallel branches on the backbone's output, all of ``channels`` = 256 filters with BN (and
ReLU): image pooling (global average pool, 1x1 conv, upsampled back to the map, which from a
1x1 map is a broadcast), a 1x1 conv, and three 3x3 convs of atrous rates (6, 12, 18) at output
stride 16, doubled, (12, 24, 36), at output stride 8. They are concatenated and projected by
"another 1x1 convolution (also with 256 filters and batch normalization)" before the final 1x1
classifier: the paper's 1x1, where mmseg's ``ASPPHead`` uses a 3x3 conv and torchvision's
``DeepLabHead`` adds a 3x3 conv after it. The dropout before the classifier (0.1) is the shared
base's, as mmseg; the paper does not give one.

At output stride 32 (HaloNet, which cannot dilate) the rates are scaled the same way, to
(3, 6, 9); the paper does not use that stride with ASPP.
"""

from collections.abc import Sequence

import torch
from torch import nn

from visionattn.segmentation.heads.decode_head import DecodeHead, conv_bn_relu

RATES_AT_16 = (6, 12, 18)


def aspp_dilations(output_stride: int) -> tuple[int, ...]:
    """The paper's rates, (6, 12, 18) at output stride 16, scaled with the feature map's
    resolution: (12, 24, 36) at 8, (3, 6, 9) at 32."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"DeepLabV3Head: output_stride must be 8, 16 or 32, got {output_stride}")
    return tuple(rate * 16 // output_stride for rate in RATES_AT_16)


class ImagePooling(nn.Module):
    """Global average pool, 1x1 conv-BN-ReLU, broadcast back to the map's size."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(in_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Bilinear upsampling of a 1x1 map is this broadcast, without the interpolation.
        return self.conv(self.pool(x)).expand(-1, -1, x.shape[2], x.shape[3])


class DeepLabV3Head(DecodeHead):
    """``classify(project(cat[pool(x), conv1x1(x), atrous_r1(x), atrous_r2(x), atrous_r3(x)]))``.

    Args:
        in_channels: channels of the input features.
        num_classes: classifier outputs.
        channels: filters of every branch and of the projection (256, the paper's).
        dropout: dropout before the classifier.
        output_stride: the stride of the input features; gives the rates when ``dilations`` is
            None (the segmentor passes the backbone's).
        dilations: explicit atrous rates of the 3x3 branches, overriding ``output_stride``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 256,
        dropout: float = 0.1,
        output_stride: int = 16,
        dilations: Sequence[int] | None = None,
    ) -> None:
        super().__init__(in_channels, num_classes, channels=channels, dropout=dropout)
        self.dilations = (
            aspp_dilations(output_stride) if dilations is None else tuple(int(d) for d in dilations)
        )
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"DeepLabV3Head: dilations must be >= 1, got {list(self.dilations)}")
        self.image_pool = ImagePooling(in_channels, channels)
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, kernel_size=1)]
            + [conv_bn_relu(in_channels, channels, 3, dilation=d) for d in self.dilations]
        )
        self.project = conv_bn_relu((len(self.dilations) + 2) * channels, channels, kernel_size=1)
        self.init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.image_pool(x), *(branch(x) for branch in self.branches)]
        return self.project(torch.cat(branches, dim=1))
