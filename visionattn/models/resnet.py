"""ResNet. He et al., Deep Residual Learning for Image Recognition, CVPR 2016,
https://arxiv.org/abs/1512.03385.

The v1.5 layout of torchvision (stride in the 3x3 conv) with torchvision's state-dict keys, so
its weights load unchanged. A gate plugin sits on the residual branch after the last norm, before
the add, as in SE-ResNet.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

AttnLayer = Callable[[int], nn.Module] | None


def _attn_or_identity(attn_layer: AttnLayer, channels: int) -> nn.Module:
    return attn_layer(channels) if attn_layer is not None else nn.Identity()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttnLayer = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = _attn_or_identity(attn_layer, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + shortcut)

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
        attn_layer: AttnLayer = None,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.attn = _attn_or_identity(attn_layer, out_channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + shortcut)

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
        attn_layer: ``channels -> module`` for the plugin in every block, or None.
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
        attn_layer: AttnLayer = None,
        drop_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"ResNet has four stages: got layers={layers}, channels={channels}")
        self.inplanes = channels[0]
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        strides = (1, 2, 2, 2)
        for i, (planes, blocks, stride) in enumerate(zip(channels, layers, strides, strict=True)):
            self.add_module(
                f"layer{i + 1}", self._make_layer(block, planes, blocks, stride, attn_layer)
            )
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
        attn_layer: AttnLayer,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        stage = [block(self.inplanes, planes, stride, downsample, attn_layer)]
        self.inplanes = out_channels
        stage += [block(self.inplanes, planes, attn_layer=attn_layer) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

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
