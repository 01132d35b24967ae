"""What every backbone shares: plugins placed by kind, multi-scale features with their channels
and strides, output stride by dilation, and the classifier head.

A family (ResNet, MobileNetV2, MobileNeXt, HaloNet) subclasses :class:`Backbone`, builds its
layers, and implements ``forward_levels`` (the stem's output, then each stage's) and
``forward_head``. ``features_only=True`` drops the head and returns the levels, as timm's
``features_only`` does, with ``feature_info`` giving their channels and strides.
"""

from collections.abc import Callable, Sequence
from itertools import islice

import torch
from torch import nn

from visionattn.attention import AttentionSpec

Size = tuple[int, int]


def to_size(img_size: int | Sequence[int] | None) -> Size | None:
    if img_size is None:
        return None
    return (
        (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
    )


def ceil_div(size: Size | None, stride: int) -> Size | None:
    """The map size after a stride-``stride`` layer padded like a 3x3 conv (None stays None)."""
    return size and (-(-size[0] // stride), -(-size[1] // stride))


def plugin_or_identity(
    attn: AttentionSpec | None, kind: str, channels: int, feat_size: Size | None, where: str
) -> nn.Module:
    """The placed plugin if it is of ``kind`` ("gate" or "context"), else an identity."""
    if attn is None or attn.kind != kind:
        return nn.Identity()
    return attn(channels, feat_size=feat_size, where=where)


def spatial_op(
    attn: AttentionSpec | None,
    conv: Callable[[], nn.Module],
    channels: int,
    out_channels: int,
    stride: int,
    feat_size: Size | None,
    where: str,
) -> nn.Module:
    """The block's spatial conv, ``conv()``, or the conv plugin placed there instead.

    A conv plugin replaces the conv whole: it has its own receptive field, so it takes the stride
    but not the dilation or the groups of the conv it replaces.
    """
    if attn is None or attn.kind != "conv":
        return conv()
    return attn(
        channels, out_channels=out_channels, stride=stride, feat_size=feat_size, where=where
    )


def sequential_levels(
    layers: nn.Sequential, x: torch.Tensor, ends: Sequence[int]
) -> list[torch.Tensor]:
    """The outputs of ``layers[i]`` for each ``i`` in ``ends``; the layers after the last one
    (a head's) do not run."""
    levels = []
    for i, layer in enumerate(islice(layers, ends[-1] + 1)):
        x = layer(x)
        if i in ends:
            levels.append(x)
    return levels


class OutputStride:
    """Turns the strides that would reduce the maps past ``output_stride`` into dilation, as
    DeepLab does: the block that would have strided keeps the dilation before it, and the blocks
    after it take the new one (torchvision's ``replace_stride_with_dilation`` and timm's
    ``output_stride`` agree on this).

    Args:
        output_stride: 8, 16 or 32.
        reduction: the stride of the stem, before the first block.
    """

    def __init__(self, output_stride: int, reduction: int) -> None:
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride, self.reduction, self.dilation = output_stride, reduction, 1

    def __call__(self, stride: int) -> tuple[int, int]:
        """The stride a block should use instead of ``stride``, and its dilation."""
        dilation = self.dilation
        if stride > 1 and self.reduction * stride > self.output_stride:
            self.dilation *= stride
            return 1, dilation
        self.reduction *= stride
        return stride, dilation


class FeatureInfo(list):
    """One dict per feature level: ``num_chs``, ``reduction`` (its stride) and ``module`` (the
    layer whose output it is), with timm's accessors."""

    def channels(self) -> list[int]:
        return [level["num_chs"] for level in self]

    def reduction(self) -> list[int]:
        return [level["reduction"] for level in self]

    def module_name(self) -> list[str]:
        return [level["module"] for level in self]


class Backbone(nn.Module):
    """Base of the backbone families.

    Subclasses set, in ``__init__``:
        ``feature_info``: a :class:`FeatureInfo` of every level ``forward_levels`` returns;
        ``num_features``: the channels ``forward_head`` pools;
    and the class attributes:
        ``head_modules``: the modules only the classifier uses (``features_only`` drops them);
        ``classifier_name``: the final linear layer (a pretrained one of another width is not
        loaded).
    Then they call :meth:`finish`.
    """

    head_modules: tuple[str, ...] = ()
    classifier_name: str = ""

    def finish(self, features_only: bool, out_indices: Sequence[int] | None) -> None:
        """Keep the levels ``out_indices`` (default all) and drop the head if ``features_only``."""
        levels = len(self.feature_info)
        out_indices = tuple(range(levels)) if out_indices is None else tuple(out_indices)
        if not out_indices or any(not -levels <= i < levels for i in out_indices):
            raise ValueError(
                f"out_indices {list(out_indices)} must index the {levels} feature levels "
                f"(0 = stem, then the stages): {self.feature_info.reduction()} strides"
            )
        self.out_indices = tuple(i % levels for i in out_indices)
        self.features_only = features_only
        if features_only:
            self.feature_info = FeatureInfo(self.feature_info[i] for i in self.out_indices)
            for name in self.head_modules:
                parent, _, child = name.rpartition(".")
                delattr(self.get_submodule(parent), child)

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's output, then the output of every stage."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_levels(x)[-1]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            levels = self.forward_levels(x)
            return [levels[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))


def init_weights(model: nn.Module) -> None:
    """He init for convs and unit BN, as torchvision does; plugins keep the init their paper gives
    them (a zero gamma, say), so their modules are skipped."""
    in_plugins = {id(m) for p in model.modules() if hasattr(p, "kind") for m in p.modules()}
    for m in model.modules():
        if id(m) in in_plugins:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
