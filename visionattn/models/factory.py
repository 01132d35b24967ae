"""One entry point for every model: ``create_model(name, attn=..., num_classes=...)``."""

from collections.abc import Callable

from torch import nn

from visionattn.attention import attention_factory
from visionattn.models import resnet

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnet152": resnet.resnet152,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` and by ``model=<name>`` in the configs."""
    return sorted(_MODELS)


def create_model(
    name: str, attn: str | dict | None = None, num_classes: int = 1000, **kwargs
) -> nn.Module:
    """Build backbone ``name`` with attention plugin ``attn`` in its blocks.

    Args:
        name: one of :func:`list_models`.
        attn: a plugin name from :func:`visionattn.list_attentions`, a dict with ``name`` and the
            plugin's arguments (what ``configs/attn/*.yaml`` holds), or None / ``"none"``.
        num_classes: classifier outputs.
        **kwargs: passed to the backbone (``channels``, ``img_size``, ``drop_rate``, ...).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name](num_classes=num_classes, attn=attention_factory(attn), **kwargs)
