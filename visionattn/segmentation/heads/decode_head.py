"""What every segmentation head ends with: dropout and the 1x1 classifier, as mmsegmentation's
``BaseDecodeHead``; a head only computes the map they read."""

import torch
from torch import nn

from visionattn.models.backbone import init_weights


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1
) -> nn.Sequential:
    """A same-size conv (no bias), BN and ReLU: mmseg's ``ConvModule``, indexed 0, 1, 2."""
    padding = (kernel_size - 1) // 2 * dilation
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
    )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DecodeHead(nn.Module):
    """``cls_seg(dropout(features(x)))``: dropout (``Dropout2d``, whole channels, as mmseg) and a
    1x1 classifier on the ``channels``-wide map that a subclass's ``features`` computes.

    Subclasses build their layers, then call :meth:`init_weights`.
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, channels: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if channels < 1 or num_classes < 1:
            raise ValueError(
                f"{type(self).__name__}: channels and num_classes must be >= 1, got "
                f"channels={channels}, num_classes={num_classes}"
            )
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.cls_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def init_weights(self) -> None:
        """He init for the convs and unit BN (plugins keep their own init), and a classifier
        drawn from N(0, 0.01^2), as mmseg does."""
        init_weights(self)
        nn.init.normal_(self.cls_seg.weight, std=0.01)
        nn.init.zeros_(self.cls_seg.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_seg(self.dropout(self.features(x)))
