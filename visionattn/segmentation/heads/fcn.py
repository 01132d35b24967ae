"""FCN head. Long, Shelhamer and Darrell, Fully Convolutional Networks for Semantic Segmentation,
CVPR 2015, https://arxiv.org/abs/1411.4038; in the form mmsegmentation's ``FCNHead`` gives it on
dilated backbones (the baseline of PSPNet, CCNet and the other context heads).

``num_convs`` 3x3 conv-BN-ReLU layers to ``channels``, optionally the input concatenated back
and fused by one more 3x3 conv-BN-ReLU (``concat_input``), then dropout and the 1x1 classifier.
The same head, ``num_convs=1, channels=256, concat_input=False``, is the auxiliary head on the
stride-16 stage (PSPNet's deep supervision; mmseg's ``auxiliary_head``).
"""

import torch
from torch import nn

from visionattn.segmentation.heads.decode_head import DecodeHead, conv_bn_relu


class FCNHead(DecodeHead):
    """``classify(fuse([x, convs(x)]))``, or ``classify(convs(x))`` without ``concat_input``.

    Args:
        in_channels: channels of the input features.
        num_classes: classifier outputs.
        channels: width of the convs (512 in mmseg's FCN, 256 for the auxiliary head).
        dropout: dropout before the classifier.
        num_convs: 3x3 conv-BN-ReLU layers (2; 1 for the auxiliary head).
        concat_input: concatenate the input with the convs' output and fuse them with a 3x3
            conv-BN-ReLU (mmseg's default, True).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 512,
        dropout: float = 0.1,
        num_convs: int = 2,
        concat_input: bool = True,
    ) -> None:
        super().__init__(in_channels, num_classes, channels=channels, dropout=dropout)
        if num_convs < 1:
            raise ValueError(f"FCNHead: num_convs must be >= 1, got {num_convs}")
        self.convs = nn.Sequential(
            *(conv_bn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs))
        )
        self.conv_cat = conv_bn_relu(in_channels + channels, channels) if concat_input else None
        self.init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return out
