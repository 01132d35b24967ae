"""Attention plugins, one paper a file, built by name.

Every plugin maps ``(B, C, H, W)`` to the same shape and declares its ``kind`` once:

- ``"gate"``: reweights features inside a block, on the residual branch;
- ``"context"``: mixes information across positions after a block;
- ``"conv"``: replaces the spatial convolution of a block.
"""

from collections.abc import Callable

from torch import nn

from visionattn.attention.se import SqueezeExcite

KINDS = ("gate", "context", "conv")

_ATTENTIONS: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
}


def list_attentions() -> list[str]:
    """Names accepted by :func:`create_attention` and by ``attn=<name>`` in the configs."""
    return sorted(_ATTENTIONS)


def get_attention(name: str) -> type[nn.Module]:
    """The plugin class registered under ``name``."""
    try:
        return _ATTENTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown attention plugin {name!r}; valid: none, {', '.join(list_attentions())}"
        ) from None


def create_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build plugin ``name`` for a feature map of ``channels`` channels."""
    return get_attention(name)(channels, **kwargs)


def attention_factory(attn: str | dict | None) -> Callable[[int], nn.Module] | None:
    """Turn ``attn`` (a name, a config dict with ``name`` and the plugin's knobs, or None) into
    ``channels -> module``, the only thing a backbone needs to know about its plugin.

    Unknown names fail here, when the model is built, not at the first forward.
    """
    if isinstance(attn, str):
        attn = {"name": attn}
    if attn is None or attn.get("name") in (None, "none"):
        return None
    kwargs = dict(attn)
    plugin = get_attention(kwargs.pop("name"))

    def build(channels: int) -> nn.Module:
        return plugin(channels, **kwargs)

    return build
