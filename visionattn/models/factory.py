"""One entry point for every model: ``create_model(name, attn=..., num_classes=...)``."""

import importlib
from collections.abc import Callable
from pathlib import Path

from torch import nn

from visionattn.attention import attention_factory
from visionattn.models.backbone import Backbone
from visionattn.models.pretrained import load_pretrained

WIDTHS = ("035", "050", "075", "100", "140")

# name -> the module of visionattn.models that builds it, with a function of the same name.
_MODELS: dict[str, str] = {
    **{f"resnet{depth}": "resnet" for depth in (18, 34, 50, 101, 152)},
    **{f"mobilenetv2_{width}": "mobilenetv2" for width in WIDTHS},
    **{f"mobilenext_{width}": "mobilenext" for width in WIDTHS},
    **{f"halonet_h{size}": "halonet" for size in range(8)},
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` and by ``model=<name>`` in the configs."""
    return sorted(_MODELS)


def _builder(name: str) -> Callable[..., Backbone]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return getattr(importlib.import_module(f"visionattn.models.{_MODELS[name]}"), name)


def create_model(
    name: str,
    attn: str | dict | None = None,
    num_classes: int = 1000,
    pretrained: str | Path | bool | None = None,
    features_only: bool = False,
    output_stride: int = 32,
    **kwargs,
) -> nn.Module:
    """Build backbone ``name`` with attention plugin ``attn`` in its blocks.

    Args:
        name: one of :func:`list_models`.
        attn: a plugin name from :func:`visionattn.list_attentions`, a dict with ``name`` and the
            plugin's arguments (what ``configs/attn/*.yaml`` holds), or None / ``"none"``.
        num_classes: classifier outputs.
        pretrained: a file of weights to start from (torchvision or timm format, or a
            visionattn checkpoint), or True for the published ImageNet weights of ``name``
            (see :mod:`visionattn.models.pretrained`).
        features_only: return the feature levels (stem, then each stage) instead of logits;
            ``model.feature_info`` gives their channels and strides.
        output_stride: 32, or 16 or 8 with the last stages dilated instead of strided (ResNet,
            MobileNetV2, MobileNeXt).
        **kwargs: passed to the backbone (``img_size``, ``drop_rate``, ``out_indices``, ...).
    """
    spec = attention_factory(attn)
    model = _builder(name)(
        num_classes=num_classes,
        attn=spec,
        features_only=features_only,
        output_stride=output_stride,
        **kwargs,
    )
    if spec is not None and not any(hasattr(m, "kind") for m in model.modules()):
        raise ValueError(
            f"attn={spec.name} with stages={spec.placement.stages} and "
            f"blocks={spec.placement.blocks} selects no block of {name}: set attn.stages and "
            "attn.blocks to blocks it has"
        )
    if pretrained:
        load_pretrained(model, pretrained, name)
    return model
