"""MobileNetV2. Sandler, Howard, Zhu, Zhmoginov and Chen, MobileNetV2: Inverted Residuals and
Linear Bottlenecks, CVPR 2018, https://arxiv.org/abs/1801.04381.

torchvision's layout with torchvision's state-dict keys (``features.0`` the stem, ``features.1``
to ``features.17`` the inverted residual blocks, ``features.18`` the 1x1 conv to 1280 channels,
``classifier.1``), so its weights load unchanged. Where the plugin goes depends on its kind: a
gate sits after the depthwise conv, on the hidden width, before the linear projection, as
Coordinate Attention does in CA-MobileNetV2 (``attn``); a context plugin follows the block
(``context``); a conv plugin replaces the depthwise conv (``conv.<i>.0``) and keeps its BN and
ReLU6.
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
    sequential_levels,
    spatial_op,
    to_size,
)

# The paper's Table 2 (t expansion, c channels, n blocks, s stride of the first), grouped into the
# four stages a placement names by the output stride of their blocks: 4, 8, 16 and 32. The t=1
# block, which works at stride 2, joins the stride-4 blocks.
_STAGES = (
    ((1, 16, 1, 1), (6, 24, 2, 2)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% down (the TF original's
    rule, which torchvision and timm keep so that every width multiplier gives the same net)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv2d(
    inp: int, oup: int, kernel_size: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Conv2d(inp, oup, kernel_size, stride, padding, dilation, groups, bias=False)


def bn_relu6(conv: nn.Module, channels: int) -> nn.Sequential:
    """``conv`` + BN + ReLU6, indexed 0, 1, 2 as torchvision's ``Conv2dNormActivation``."""
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """A 1x1 expansion to ``t`` times the width (none when t=1), a depthwise 3x3, and a linear 1x1
    projection; an identity shortcut when the width and the size are kept.

    ``conv`` holds torchvision's layers under torchvision's indices; ``attn`` and ``context`` are
    identities unless a plugin of their kind is placed in this block.
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        attn: AttentionSpec | None = None,
        feat_size: tuple[int, int] | None = None,
        where: str = "",
        dilation: int = 1,
    ) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        out_size = ceil_div(feat_size, stride)
        self.stride = stride
        self.residual = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else [bn_relu6(conv2d(inp, hidden, 1), hidden)]
        depthwise = spatial_op(
            attn, lambda: conv2d(hidden, hidden, 3, stride, groups=hidden, dilation=dilation),
            hidden, hidden, stride, feat_size, where,
        )  # fmt: skip
        layers += [bn_relu6(depthwise, hidden), conv2d(hidden, oup, 1), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.attn = plugin_or_identity(attn, "gate", hidden, out_size, where)
        self.context = plugin_or_identity(attn, "context", oup, out_size, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *spatial, project, norm = self.conv
        out = x
        for layer in spatial:  # the expansion (if any), then the depthwise conv
            out = layer(out)
        out = norm(project(self.attn(out)))
        if self.residual:
            out = out + x
        return self.context(out)


class MobileNetV2(Backbone):
    """A stride-2 stem, 17 inverted residual blocks in four stages, a 1x1 conv to 1280 channels
    (more when ``width_mult > 1``), global average pooling and a linear classifier.

    The feature levels are timm's: the outputs of ``features.1`` (stride 2), ``features.3``,
    ``features.6``, ``features.13`` and ``features.17`` (strides 4 to 32).

    Args:
        width_mult: the width multiplier (0.35 to 1.4 in the paper).
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

    head_modules = ("features.18", "classifier")
    classifier_name = "classifier.1"

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
        self.feature_info = FeatureInfo()
        schedule = OutputStride(output_stride, reduction=2)
        feat_size = ceil_div(to_size(img_size), 2)
        for stage, settings in enumerate(_STAGES, start=1):
            blocks = [(t, c, s if i == 0 else 1) for t, c, n, s in settings for i in range(n)]
            depth = len(blocks)
            for index, (t, c, s) in enumerate(blocks):
                placed = attn if attn is not None and attn.selects(stage, index, depth) else None
                stride, dilation = schedule(s)
                oup = make_divisible(c * width_mult)
                where = f"features.{len(layers)}"
                layers.append(
                    InvertedResidual(inp, oup, stride, t, placed, feat_size, where, dilation)
                )
                feat_size, inp = ceil_div(feat_size, stride), oup
                # timm's levels: the t=1 block (stride 2), then the end of each stage
                if where == "features.1" or index == depth - 1:
                    self.feature_info.append(
                        dict(num_chs=oup, reduction=schedule.reduction, module=where)
                    )
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        layers.append(bn_relu6(conv2d(inp, self.num_features, 1), self.num_features))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes)
        )
        self.level_ends = [int(m.rpartition(".")[2]) for m in self.feature_info.module_name()]
        init_weights(self)
        fc = self.get_classifier()
        nn.init.normal_(fc.weight, 0, 0.01)
        nn.init.zeros_(fc.bias)
        self.finish(features_only, out_indices)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return sequential_levels(self.features, x, self.level_ends)  # features.18 is the head

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[-1](x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenetv2_035(**kwargs) -> MobileNetV2:
    return MobileNetV2(0.35, **kwargs)


def mobilenetv2_050(**kwargs) -> MobileNetV2:
    return MobileNetV2(0.5, **kwargs)


def mobilenetv2_075(**kwargs) -> MobileNetV2:
    return MobileNetV2(0.75, **kwargs)


def mobilenetv2_100(**kwargs) -> MobileNetV2:
    return MobileNetV2(1.0, **kwargs)


def mobilenetv2_140(**kwargs) -> MobileNetV2:
    return MobileNetV2(1.4, **kwargs)
