"""ResNet. He et al., Deep Residual Learning for Image Recognition, CVPR 2016,
https://arxiv.org/abs/1512.03385.

The v1.5 layout of torchvision (stride in the 3x3 conv) with torchvision's state-dict keys, so
its weights load unchanged. Where the plugin goes depends on its kind: a gate sits on the residual
branch after the last norm, before the add, as in SE-ResNet (``attn``); a context plugin follows
the block (``context``); a conv plugin replaces the 3x3 conv that carries the stride (``conv2``),
as in HaloNet and BoTNet.
"""

from collections.abc import Sequence

import torch
from torch import nn

from visionattn.attention import AttentionSpec
from visionattn.models.backbone import (
    Backbone,
    FeatureInfo,
    OutputStride,
    ceil_div,
    init_weights,
    plugin_or_identity,
    spatial_op,
    to_size,
)


def _conv3x3(inplanes: int, planes: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(
        inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs. A conv plugin replaces the second (it keeps the width and the stride of 1,
    so every plugin sees the block's output size)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: AttentionSpec | None = None,
        feat_size: tuple[int, int] | None = None,
        where: str = "",
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out_size = ceil_div(feat_size, stride)
        self.stride = stride
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = spatial_op(
            attn, lambda: _conv3x3(planes, planes, 1, dilation), planes, planes, 1, out_size, where
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = plugin_or_identity(attn, "gate", planes, out_size, where)
        self.downsample = downsample
        self.context = plugin_or_identity(attn, "context", planes, out_size, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.context(self.relu(out + shortcut))

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: AttentionSpec | None = None,
        feat_size: tuple[int, int] | None = None,
        where: str = "",
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        out_size = ceil_div(feat_size, stride)
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = spatial_op(
            attn, lambda: _conv3x3(planes, planes, stride, dilation), planes, planes, stride,
            feat_size, where,
        )  # fmt: skip
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.attn = plugin_or_identity(attn, "gate", out_channels, out_size, where)
        self.downsample = downsample
        self.context = plugin_or_identity(attn, "context", out_channels, out_size, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.context(self.relu(out + shortcut))

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


class ResNet(Backbone):
    """A stem, four stages of residual blocks, global average pooling and a linear classifier.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        num_classes: classifier outputs.
        in_chans: input channels.
        channels: width of each stage (before the block expansion); the stem has ``channels[0]``.
        attn: the attention plugin and the blocks it goes in
            (:func:`visionattn.attention.attention_factory`), or None.
        img_size: input size; plugins tied to one feature size (Linformer, BoT, AA) need it, and
            size checks (halo blocks) then run when the model is built.
        drop_rate: dropout before the classifier.
        zero_init_last: start each residual branch at zero (Goyal et al. 2017), as timm does.
        output_stride: 32, or 16 or 8 with the last stages dilated instead of strided.
        features_only: return the five feature levels (stem, then each stage) without the head.
        out_indices: which of those levels to return.
    """

    head_modules = ("avgpool", "dropout", "fc")
    classifier_name = "fc"

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512),
        attn: AttentionSpec | None = None,
        img_size: int | Sequence[int] | None = None,
        drop_rate: float = 0.0,
        zero_init_last: bool = True,
        output_stride: int = 32,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"ResNet has four stages: got layers={layers}, channels={channels}")
        if attn is not None:
            attn.placement.check(num_stages=4)
        self.inplanes = channels[0]
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = FeatureInfo([dict(num_chs=self.inplanes, reduction=2, module="act1")])
        schedule = OutputStride(output_stride, reduction=4)
        feat_size = ceil_div(ceil_div(to_size(img_size), 2), 2)  # the stem's conv and max-pool
        for i, (planes, blocks) in enumerate(zip(channels, layers, strict=True)):
            stride = 1 if i == 0 else 2
            stage = self._make_layer(
                block, planes, blocks, stride, attn, i + 1, feat_size, schedule
            )
            self.add_module(f"layer{i + 1}", stage)
            feat_size = ceil_div(feat_size, stage[0].stride)
            self.feature_info.append(
                dict(num_chs=self.inplanes, reduction=schedule.reduction, module=f"layer{i + 1}")
            )
        self.num_features = self.inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_norm().weight)
        self.finish(features_only, out_indices)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        attn: AttentionSpec | None,
        stage: int,
        feat_size: tuple[int, int] | None,
        schedule: OutputStride,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        stride, first_dilation = schedule(stride)
        downsample = None
        if stride != 1 or self.inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = []
        for index in range(blocks):
            placed = attn if attn is not None and attn.selects(stage, index, blocks) else None
            dilation = first_dilation if index == 0 else schedule.dilation
            where = f"layer{stage}.{index}"
            layers.append(
                block(self.inplanes, planes, stride, downsample, placed, feat_size, where, dilation)
            )
            feat_size = ceil_div(feat_size, stride)
            self.inplanes, stride, downsample = out_channels, 1, None
        return nn.Sequential(*layers)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [self.relu(self.bn1(self.conv1(x)))]
        x = self.maxpool(levels[0])
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            levels.append(x)
        return levels

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def resnet18(layers: Sequence[int] = (2, 2, 2, 2), **kwargs) -> ResNet:
    return ResNet(BasicBlock, layers, **kwargs)


def resnet34(layers: Sequence[int] = (3, 4, 6, 3), **kwargs) -> ResNet:
    return ResNet(BasicBlock, layers, **kwargs)


def resnet50(layers: Sequence[int] = (3, 4, 6, 3), **kwargs) -> ResNet:
    return ResNet(Bottleneck, layers, **kwargs)


def resnet101(layers: Sequence[int] = (3, 4, 23, 3), **kwargs) -> ResNet:
    return ResNet(Bottleneck, layers, **kwargs)


def resnet152(layers: Sequence[int] = (3, 8, 36, 3), **kwargs) -> ResNet:
    return ResNet(Bottleneck, layers, **kwargs)
