"""MobileNeXt. Zhou, Hou, Chen, Feng and Yan, Rethinking Bottleneck Structure for Efficient
Mobile Network Design, ECCV 2020, https://arxiv.org/abs/2007.02269.

The sandglass block flips MobileNetV2's inverted residual: the shortcut joins the wide
(``oup``) maps, the 1x1 convs first reduce the width ``t`` times and then restore it, and a
depthwise 3x3 works on the wide maps at each end. The layers and their widths follow the authors'
code (github.com/yitu-opensource/MobileNeXt); the names are ours, as no torchvision weights exist.

Where the plugin goes depends on its kind: a gate follows the first depthwise conv, on the input
width, which the Coordinate Attention authors found to work best in MobileNeXt; a context plugin
follows the block; a conv plugin replaces the last depthwise conv, the one that carries the
stride. Two kinds of transition block lack a depthwise conv (:class:`SandglassBlock`): without
the first one the gate ends the block, and the two blocks of 1x1 convs only (one at stride 16,
one at stride 32) keep them and take no conv plugin.
"""

import math
from collections import OrderedDict
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
    sequential_levels,
    spatial_op,
    to_size,
)
from visionattn.models.mobilenetv2 import bn_relu6, conv2d, make_divisible

# The paper's settings (t reduction, c channels, n blocks, s stride of the first), grouped into the
# four stages a placement names by the output stride of their blocks: 4, 8, 16 and 32.
_STAGES = (
    ((2, 96, 1, 2), (6, 144, 1, 1)),
    ((6, 192, 3, 2),),
    ((6, 288, 3, 2), (6, 384, 4, 1)),
    ((6, 576, 4, 2), (6, 960, 3, 1), (6, 1280, 1, 1)),
)


def _bn(conv: nn.Module, channels: int) -> nn.Sequential:
    """``conv`` + BN with no activation: the sandglass block's linear layers."""
    return nn.Sequential(conv, nn.BatchNorm2d(channels))


class SandglassBlock(nn.Module):
    """A depthwise 3x3 on the input, a linear 1x1 reducing to ``hidden``, a 1x1 back to ``oup``
    with ReLU6, and a linear depthwise 3x3 that carries the stride; an identity shortcut when the
    width and the size are kept.

    ``hidden`` is ``inp // t``, raised to ``oup / 6`` rounded up to a multiple of 16 where that is
    wider. As in the authors' code, the blocks that change the width drop depthwise convs:

    - ``t == 2`` (the first block) and the block of a one-block stride-1 setting (``keep_3x3``:
      96 -> 144 and 960 -> 1280): all four layers, no shortcut;
    - other width changes at stride 1: the two 1x1 convs only;
    - other width changes at stride 2: the two 1x1 convs and the strided depthwise conv;
    - the blocks that keep the width (stride 1): all four layers and the shortcut. (A block
      that kept the width at stride 2, which the table has none of, would stride and take no
      shortcut; the authors' code would drop its stride.)

    Plugins: a gate follows the first depthwise conv (its BN and ReLU6), on ``inp`` channels; in
    the blocks without that conv it ends the block instead, on ``oup`` channels (they have no
    shortcut). A context plugin follows the block, after the shortcut. A conv plugin replaces the
    last depthwise conv and keeps its BN; the blocks of 1x1 convs only keep them.

    ``layers`` runs in order: ``dw1`` (with ReLU6), ``attn`` where it sits, ``reduce``,
    ``expand`` (with ReLU6), ``dw2``.

    Args:
        stride: the stride of the paper's table, which decides the layers.
        dilation: of the depthwise convs.
        dilated: ``output_stride`` turned this block's stride into dilation: it keeps the layers
            of a strided block, and its last depthwise conv runs at stride 1.
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        keep_3x3: bool = False,
        attn: AttentionSpec | None = None,
        feat_size: tuple[int, int] | None = None,
        where: str = "",
        dilation: int = 1,
        dilated: bool = False,
    ) -> None:
        super().__init__()
        hidden = inp // expand_ratio
        if hidden < oup / 6:
            hidden = make_divisible(math.ceil(oup / 6), 16)
        self.stride = 1 if dilated else stride
        out_size = ceil_div(feat_size, self.stride)
        first_dw = expand_ratio == 2 or keep_3x3 or inp == oup
        last_dw = first_dw or stride == 2
        self.residual = inp == oup and stride == 1 and not keep_3x3 and expand_ratio != 2

        def depthwise(channels: int, stride: int) -> nn.Conv2d:
            return conv2d(channels, channels, 3, stride, groups=channels, dilation=dilation)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if first_dw:
            layers["dw1"] = bn_relu6(depthwise(inp, 1), inp)
            layers["attn"] = plugin_or_identity(attn, "gate", inp, feat_size, where)
        layers["reduce"] = _bn(conv2d(inp, hidden, 1), hidden)
        layers["expand"] = bn_relu6(conv2d(hidden, oup, 1), oup)
        if last_dw:
            dw2 = spatial_op(
                attn, lambda: depthwise(oup, self.stride), oup, oup, self.stride, feat_size, where
            )
            layers["dw2"] = _bn(dw2, oup)
        if not first_dw:
            layers["attn"] = plugin_or_identity(attn, "gate", oup, out_size, where)
        self.layers = nn.Sequential(layers)
        self.context = plugin_or_identity(attn, "context", oup, out_size, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        if self.residual:
            out = out + x
        return self.context(out)


class MobileNeXt(Backbone):
    """A stride-2 stem, 20 sandglass blocks in four stages, global average pooling and a linear
    classifier (no final 1x1 conv: the last block already gives 1280 channels).

    The feature levels are the stem's output (stride 2) and the output of each stage
    (``features.2``, ``.5``, ``.12`` and ``.20``, strides 4 to 32).

    Args:
        width_mult: the width multiplier (0.35 to 1.4 in the paper); the last block keeps 1280
            channels below 1.
        num_classes: classifier outputs.
        in_chans: input channels.
        attn: the attention plugin and the blocks it goes in
            (:func:`visionattn.attention.attention_factory`), or None.
        img_size: input size; plugins tied to one feature size (Linformer, BoT, AA) need it, and
            size checks (halo blocks) then run when the model is built.
        drop_rate: dropout before the classifier.
        output_stride: 32, or 16 or 8 with the last blocks dilated instead of strided.
        features_only: return the five feature levels without the head.
        out_indices: which of those levels to return.
    """

    head_modules = ("avgpool", "dropout", "fc")
    classifier_name = "fc"

    def __init__(
        self,
        width_mult: float,
        num_classes: int = 1000,
        in_chans: int = 3,
        attn: AttentionSpec | None = None,
        img_size: int | Sequence[int] | None = None,
        drop_rate: float = 0.2,
        output_stride: int = 32,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if attn is not None:
            attn.placement.check(num_stages=4)
        inp = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [bn_relu6(conv2d(in_chans, inp, 3, stride=2), inp)]
        self.feature_info = FeatureInfo([dict(num_chs=inp, reduction=2, module="features.0")])
        schedule = OutputStride(output_stride, reduction=2)
        feat_size = ceil_div(to_size(img_size), 2)
        for stage, settings in enumerate(_STAGES, start=1):
            blocks = [
                (t, c, s, n == 1 and s == 1) if i == 0 else (t, c, 1, False)
                for t, c, n, s in settings
                for i in range(n)
            ]
            depth = len(blocks)
            for index, (t, c, s, keep_3x3) in enumerate(blocks):
                placed = attn if attn is not None and attn.selects(stage, index, depth) else None
                stride, dilation = schedule(s)
                oup = 1280 if c == 1280 and width_mult < 1 else make_divisible(c * width_mult)
                where = f"features.{len(layers)}"
                block = SandglassBlock(
                    inp, oup, s, t, keep_3x3, placed, feat_size, where, dilation,
                    dilated=stride != s,
                )  # fmt: skip
                layers.append(block)
                feat_size, inp = ceil_div(feat_size, stride), oup
            self.feature_info.append(dict(num_chs=inp, reduction=schedule.reduction, module=where))
        self.features = nn.Sequential(*layers)
        self.num_features = inp
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.level_ends = [int(m.rpartition(".")[2]) for m in self.feature_info.module_name()]
        init_weights(self)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)
        self.finish(features_only, out_indices)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return sequential_levels(self.features, x, self.level_ends)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def mobilenext_035(**kwargs) -> MobileNeXt:
    return MobileNeXt(0.35, **kwargs)


def mobilenext_050(**kwargs) -> MobileNeXt:
    return MobileNeXt(0.5, **kwargs)


def mobilenext_075(**kwargs) -> MobileNeXt:
    return MobileNeXt(0.75, **kwargs)


def mobilenext_100(**kwargs) -> MobileNeXt:
    return MobileNeXt(1.0, **kwargs)


def mobilenext_140(**kwargs) -> MobileNeXt:
    return MobileNeXt(1.4, **kwargs)
