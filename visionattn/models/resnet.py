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


def _ceil_div(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return (-(-size[0] // stride), -(-size[1] // stride))


def _plugin(
    attn: AttentionSpec | None, kind: str, channels: int, feat_size, where: str
) -> nn.Module:
    if attn is None or attn.kind != kind:
        return nn.Identity()
    return attn(channels, feat_size=feat_size, where=where)


def _spatial_conv(
    attn: AttentionSpec | None, inplanes: int, planes: int, stride: int, feat_size, where: str
) -> nn.Module:
    if attn is None or attn.kind != "conv":
        return nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
    return attn(inplanes, out_channels=planes, stride=stride, feat_size=feat_size, where=where)


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
    ) -> None:
        super().__init__()
        out_size = feat_size and _ceil_div(feat_size, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _spatial_conv(attn, planes, planes, 1, out_size, where)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = _plugin(attn, "gate", planes, out_size, where)
        self.downsample = downsample
        self.context = _plugin(attn, "context", planes, out_size, where)

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
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        out_size = feat_size and _ceil_div(feat_size, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _spatial_conv(attn, planes, planes, stride, feat_size, where)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.attn = _plugin(attn, "gate", out_channels, out_size, where)
        self.downsample = downsample
        self.context = _plugin(attn, "context", out_channels, out_size, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.context(self.relu(out + shortcut))

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


class ResNet(nn.Module):
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
    """

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
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"ResNet has four stages: got layers={layers}, channels={channels}")
        if attn is not None:
            attn.placement.check(num_stages=4)
        feat_size = None
        if img_size is not None:
            img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            feat_size = _ceil_div(_ceil_div(img_size, 2), 2)  # the stem's conv and max-pool
        self.inplanes = channels[0]
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        strides = (1, 2, 2, 2)
        for i, (planes, blocks, stride) in enumerate(zip(channels, layers, strides, strict=True)):
            stage = self._make_layer(block, planes, blocks, stride, attn, i + 1, feat_size)
            self.add_module(f"layer{i + 1}", stage)
            feat_size = feat_size and _ceil_div(feat_size, stride)
        self.num_features = channels[-1] * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_last)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        attn: AttentionSpec | None,
        stage: int,
        feat_size: tuple[int, int] | None,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = []
        for index in range(blocks):
            placed = attn if attn is not None and attn.selects(stage, index, blocks) else None
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride,
                    downsample,
                    placed,
                    feat_size,
                    f"layer{stage}.{index}",
                )
            )
            feat_size = feat_size and _ceil_div(feat_size, stride)
            self.inplanes, stride, downsample = out_channels, 1, None
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_last: bool) -> None:
        # Plugins keep the init their paper gives them (a zero gamma, say): skip their modules.
        in_plugins = {id(m) for p in self.modules() if hasattr(p, "kind") for m in p.modules()}
        for m in self.modules():
            if id(m) in in_plugins:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_norm().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)


def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 8, 36, 3), **kwargs)
