"""HaloNet H0..H7. Vaswani, Ramachandran, Srinivas, Parmar, Hechtman and Shlens, Scaling Local
Self-Attention for Parameter Efficient Visual Backbones, CVPR 2021,
https://arxiv.org/abs/2103.12731.

A ResNet-50-style body whose every spatial conv is halo attention
(:class:`visionattn.attention.halo.HaloAttention`): the stem (7x7 conv, max-pool), four stages of
``[3, 3, l3, 3]`` bottleneck blocks of width ``64 * 2^i``, each block a 1x1 conv, halo attention
with block ``b`` and halo ``h`` (4 heads in the first stage, 8 after; strided in the first block
of stages 2-4), and a 1x1 conv to ``rb`` times the bottleneck width. The values are ``rv`` times
wider than the queries and keys. From H3 on, a 1x1 conv to ``df`` channels precedes the pooling.

The paper gives the settings (b, h, rv, rb, l3, df) and the parameter counts, not the layers; the
layout here is the one that reproduces the eight counts (5.5 / 8.1 / 9.4 / 11.8 / 19.1 / 30.7 /
43.4 / 67.4 M) within 0.3%, and timm's ``halonet_h1`` layer for layer (its relative position
tables are longer and its first stage has 8 heads, which changes only those tables).

Activation: SiLU. The paper's text was not reachable from here to confirm it; the public
re-implementation that follows its H0..H7 table (keras_cv_attention_models' ``HaloNetH0``..
``H7``) uses swish = SiLU, while timm's ``halonet_h1`` keeps its generic ReLU default.

Input size: halo attention cuts every map into ``b x b`` blocks, so each stage's map, down to the
stride-32 one, must be a multiple of ``b``: image sides that are multiples of ``32 b`` (256 for
H0..H2 and H6, 320 for H3 and H7, 384 for H4, 448 for H5). H7's paper size, 600, is not one
(its stride-32 map, 18.75 pixels, is no whole number of 10-pixel blocks); 640 is the nearest
that works. The other seven paper sizes (256 / 256 / 256 / 320 / 384 / 448 / 512) work.

Plugins (``attn``): a gate sits on the residual branch after the last norm, before the add
(``attn``); a context plugin follows the block (``context``); a conv plugin replaces the block's
halo attention (``conv2``), taking its stride and its widths. There is no dilated form: the
network downsamples by strided attention, so ``output_stride`` is 32.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from visionattn.attention import AttentionSpec
from visionattn.attention.halo import HaloAttention
from visionattn.models.backbone import (
    Backbone,
    FeatureInfo,
    ceil_div,
    init_weights,
    plugin_or_identity,
    spatial_op,
    to_size,
)

Size = tuple[int, int]


@dataclass(frozen=True)
class HaloNetConfig:
    """One row of the paper's table of HaloNet models."""

    block_size: int  # b
    halo_size: int  # h
    value_ratio: float  # rv: values this many times wider than the queries and keys
    bottleneck_ratio: float  # rb: block output this many times the bottleneck width
    stage3_depth: int  # l3
    final_channels: int | None  # df: a 1x1 conv to this width before the pooling


CONFIGS: dict[str, HaloNetConfig] = {
    "halonet_h0": HaloNetConfig(8, 3, 1, 0.5, 7, None),
    "halonet_h1": HaloNetConfig(8, 3, 1, 1, 10, None),
    "halonet_h2": HaloNetConfig(8, 3, 1, 1.25, 11, None),
    "halonet_h3": HaloNetConfig(10, 3, 1, 1.5, 12, 1024),
    "halonet_h4": HaloNetConfig(12, 2, 1, 3, 12, 1280),
    "halonet_h5": HaloNetConfig(14, 2, 2.5, 2, 23, 1536),
    "halonet_h6": HaloNetConfig(8, 4, 3, 2.75, 24, 1536),
    "halonet_h7": HaloNetConfig(10, 3, 4, 3.5, 26, 2048),
}


def _width(channels: int, ratio: float) -> int:
    width = channels * ratio
    if width != int(width):
        raise ValueError(f"HaloNet: {channels} x {ratio} is not a whole number of channels")
    return int(width)


class HaloBlock(nn.Module):
    """1x1 conv, halo attention (the block's spatial op, strided in a downsampling block), 1x1
    conv, each followed by a norm, with an identity or projection shortcut."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        value_ratio: float = 1,
        block_size: int = 8,
        halo_size: int = 3,
        num_heads: int = 8,
        act_layer: type[nn.Module] = nn.SiLU,
        attn: AttentionSpec | None = None,
        feat_size: Size | None = None,
        where: str = "",
    ) -> None:
        super().__init__()
        value_channels = _width(mid_channels, value_ratio)
        out_size = ceil_div(feat_size, stride)
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = spatial_op(
            attn,
            lambda: HaloAttention(
                mid_channels, out_channels=value_channels, qk_channels=mid_channels,
                stride=stride, block_size=block_size, halo_size=halo_size, num_heads=num_heads,
                feat_size=feat_size,
            ),
            mid_channels, value_channels, stride, feat_size, where,
        )  # fmt: skip
        self.bn2 = nn.BatchNorm2d(value_channels)
        self.conv3 = nn.Conv2d(value_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = act_layer(inplace=True)
        self.attn = plugin_or_identity(attn, "gate", out_channels, out_size, where)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.context = plugin_or_identity(attn, "context", out_channels, out_size, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.context(self.act(out + shortcut))

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


class HaloNet(Backbone):
    """A ResNet stem, four stages of :class:`HaloBlock`, an optional 1x1 conv to
    ``final_channels``, global average pooling and a linear classifier.

    Args:
        layers: blocks per stage (``[3, 3, l3, 3]`` in the paper).
        num_classes: classifier outputs.
        in_chans: input channels.
        channels: bottleneck width of each stage; the stem has 64 channels.
        bottleneck_ratio: ``rb``, block output width over its bottleneck width.
        value_ratio: ``rv``, value width over query/key width in the halo attention.
        block_size: ``b``, the side of the attention's query blocks.
        halo_size: ``h``, the halo around each block.
        num_heads: attention heads of each stage.
        final_channels: ``df``, the width of a 1x1 conv before the pooling, or None for none.
        act_layer: the activation (SiLU, see the module docstring).
        attn: the attention plugin and the blocks it goes in, or None.
        img_size: input size; given, an input the halo blocks cannot cut fails when the model is
            built (otherwise at the first forward).
        drop_rate: dropout before the classifier.
        zero_init_last: start each residual branch at zero, as ResNet does.
        output_stride: 32 only (there is no dilated form of strided attention).
        features_only: return the five feature levels (stem, then each stage) without the head.
        out_indices: which of those levels to return.
        name: the model's name in error messages.
    """

    head_modules = ("final_conv", "avgpool", "dropout", "fc")
    classifier_name = "fc"

    def __init__(
        self,
        layers: Sequence[int] = (3, 3, 10, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512),
        bottleneck_ratio: float = 1,
        value_ratio: float = 1,
        block_size: int = 8,
        halo_size: int = 3,
        num_heads: Sequence[int] = (4, 8, 8, 8),
        final_channels: int | None = None,
        act_layer: type[nn.Module] = nn.SiLU,
        attn: AttentionSpec | None = None,
        img_size: int | Sequence[int] | None = None,
        drop_rate: float = 0.0,
        zero_init_last: bool = True,
        output_stride: int = 32,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        name: str = "HaloNet",
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(channels) != 4 or len(num_heads) != 4:
            raise ValueError(
                f"HaloNet has four stages: got layers={layers}, channels={channels}, "
                f"num_heads={num_heads}"
            )
        if output_stride != 32:
            raise ValueError(
                f"{name} has no dilated form: it downsamples with strided attention, so "
                f"output_stride must be 32, got {output_stride} (ResNet, MobileNetV2 and "
                "MobileNeXt take 8 or 16); set model.output_stride=32 (segmentation defaults to 8)"
            )
        if attn is not None:
            attn.placement.check(num_stages=4)
        self.model_name, self.block_size = name, block_size
        # A conv plugin in every block leaves no halo layer to cut the maps into blocks.
        self.needs_blocks = attn is None or attn.kind != "conv" or not all(
            attn.selects(i + 1, j, depth) for i, depth in enumerate(layers) for j in range(depth)
        )  # fmt: skip
        size = to_size(img_size)
        if size is not None:
            self.check_size(*size)

        stem = 64
        self.conv1 = nn.Conv2d(in_chans, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = FeatureInfo([dict(num_chs=stem, reduction=2, module="act1")])
        feat_size = ceil_div(ceil_div(size, 2), 2)  # the stem's conv and max-pool
        in_channels, reduction = stem, 4
        for i, (mid, depth, heads) in enumerate(zip(channels, layers, num_heads, strict=True)):
            out_channels = _width(mid, bottleneck_ratio)
            blocks = []
            for index in range(depth):
                stride = 2 if i > 0 and index == 0 else 1
                placed = attn if attn is not None and attn.selects(i + 1, index, depth) else None
                block = HaloBlock(
                    in_channels, mid, out_channels, stride=stride, value_ratio=value_ratio,
                    block_size=block_size, halo_size=halo_size, num_heads=heads,
                    act_layer=act_layer, attn=placed, feat_size=feat_size,
                    where=f"layer{i + 1}.{index}",
                )  # fmt: skip
                blocks.append(block)
                feat_size = ceil_div(feat_size, stride)
                reduction *= stride
                in_channels = out_channels
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(
                dict(num_chs=out_channels, reduction=reduction, module=f"layer{i + 1}")
            )

        self.final_conv: nn.Module = nn.Identity()
        self.num_features = in_channels
        if final_channels:
            self.final_conv = nn.Sequential(
                nn.Conv2d(in_channels, final_channels, 1, bias=False),
                nn.BatchNorm2d(final_channels),
                act_layer(inplace=True),
            )
            self.num_features = final_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, HaloBlock):
                    nn.init.zeros_(m.last_norm().weight)
        self.finish(features_only, out_indices)

    def check_size(self, height: int, width: int) -> None:
        """Fail, naming the sizes that work, when the halo blocks cannot cut every stage's map."""
        side = 32 * self.block_size
        if self.needs_blocks and (height % side or width % side):
            raise ValueError(
                f"{self.model_name} takes images whose sides are multiples of {side} (block size "
                f"{self.block_size} on the stride-32 map), got {height}x{width}"
            )

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_size(x.shape[-2], x.shape[-1])
        levels = [self.act1(self.bn1(self.conv1(x)))]
        x = self.maxpool(levels[0])
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            levels.append(x)
        return levels

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.final_conv(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def _halonet(name: str, **kwargs) -> HaloNet:
    cfg = CONFIGS[name]
    return HaloNet(
        layers=(3, 3, cfg.stage3_depth, 3),
        bottleneck_ratio=cfg.bottleneck_ratio,
        value_ratio=cfg.value_ratio,
        block_size=cfg.block_size,
        halo_size=cfg.halo_size,
        final_channels=cfg.final_channels,
        name=name,
        **kwargs,
    )


def halonet_h0(**kwargs) -> HaloNet:
    return _halonet("halonet_h0", **kwargs)


def halonet_h1(**kwargs) -> HaloNet:
    return _halonet("halonet_h1", **kwargs)


def halonet_h2(**kwargs) -> HaloNet:
    return _halonet("halonet_h2", **kwargs)


def halonet_h3(**kwargs) -> HaloNet:
    return _halonet("halonet_h3", **kwargs)


def halonet_h4(**kwargs) -> HaloNet:
    return _halonet("halonet_h4", **kwargs)


def halonet_h5(**kwargs) -> HaloNet:
    return _halonet("halonet_h5", **kwargs)


def halonet_h6(**kwargs) -> HaloNet:
    return _halonet("halonet_h6", **kwargs)


def halonet_h7(**kwargs) -> HaloNet:
    """HaloNet-H7: the paper runs it at 600 px, which b = 10 cannot cut (it needs multiples of
    320); 640 is the nearest size that works."""
    return _halonet("halonet_h7", **kwargs)
