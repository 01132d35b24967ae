"""Segmentation heads, one idea a file, built by name, sharing one base.

As in mmsegmentation's decode heads, the base :class:`DecodeHead` owns what every head ends with,
dropout and the 1x1 classifier ``cls_seg``; a head only computes ``features(x)``, the
``channels``-wide map the classifier reads. Every head is
``Head(in_channels, num_classes, *, channels, dropout=0.1, ...)`` and returns logits
``(B, num_classes, h, w)`` at the resolution of its input.

The registry holds import paths, so listing the names imports no head.
"""

import importlib

from visionattn.segmentation.heads.decode_head import DecodeHead, conv_bn_relu

__all__ = ["DecodeHead", "conv_bn_relu", "create_head", "get_head", "list_heads"]

_HEADS: dict[str, str] = {
    "fcn": "fcn.FCNHead",
    "deeplabv3": "deeplabv3.DeepLabV3Head",
    "attention": "attention.AttentionHead",
}


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head` and by ``head=<name>`` in the configs."""
    return sorted(_HEADS)


def get_head(name: str) -> type[DecodeHead]:
    """The head class registered under ``name``."""
    if name not in _HEADS:
        raise ValueError(f"unknown segmentation head {name!r}; valid: {', '.join(list_heads())}")
    module, cls = _HEADS[name].rsplit(".", 1)
    return getattr(importlib.import_module(f"visionattn.segmentation.heads.{module}"), cls)


def create_head(name: str, in_channels: int, num_classes: int, **kwargs) -> DecodeHead:
    """Build head ``name`` on features of ``in_channels`` channels."""
    return get_head(name)(in_channels, num_classes, **kwargs)
