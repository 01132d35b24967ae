"""Attention plugins, one paper a file, built by name.

Every plugin maps ``(B, C, H, W)`` to the same shape (a conv plugin: to the shape of the conv it
replaces) and declares its ``kind`` once:

- ``"gate"``: reweights features inside a block, on the residual branch;
- ``"context"``: mixes information across positions after a block, ``x + gamma * f(x)`` with the
  residual scale zero at init, so the backbone computes what it computed without it;
- ``"conv"``: replaces the spatial convolution of a block.

The registry holds import paths, so listing the names imports no plugin.
"""

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from visionattn.attention.knobs import check_knobs
from visionattn.attention.placement import Placement

KINDS = ("gate", "context", "conv")

_ATTENTIONS: dict[str, str] = {
    # gate
    "se": "se.SqueezeExcite",
    "eca": "eca.EfficientChannelAttention",
    "cbam": "cbam.CBAM",
    "bam": "bam.BAM",
    "coordatt": "coordatt.CoordinateAttention",
    "gc": "gc.GlobalContext",
    "triplet": "triplet.TripletAttention",
    "gsop": "gsop.GlobalSecondOrderPooling",
    # context
    "nonlocal": "non_local.NonLocal",
    "sagan": "sagan.SelfAttention",
    "ccnet": "ccnet.CrissCrossAttention",
    "issa": "issa.InterlacedSparseSelfAttention",
    "a2": "a2.DoubleAttention",
    "linformer": "linformer.LinformerAttention",
    "cgnl": "cgnl.CompactGeneralizedNonLocal",
    "external": "external.ExternalAttention",
    "fastformer": "fastformer.Fastformer",
    "efficient": "efficient.EfficientAttention",
    "axial": "axial.AxialAttention",
    "caa": "caa.ChannelizedAxialAttention",
    "danet": "danet.DualAttention",
    "generalized": "generalized.GeneralizedAttention",
    # conv
    "halo": "halo.HaloAttention",
    "sasa": "sasa.StandAloneSelfAttention",
    "aa": "aa.AttentionAugmentedConv",
    "bot": "bot.BottleneckAttention",
    "involution": "involution.Involution",
    "sk": "sk.SelectiveKernelConv",
    "deform": "deform.DeformableConv",
}


def list_attentions() -> list[str]:
    """Names accepted by :func:`create_attention` and by ``attn=<name>`` in the configs."""
    return sorted(_ATTENTIONS)


def get_attention(name: str) -> type[nn.Module]:
    """The plugin class registered under ``name``."""
    if name not in _ATTENTIONS:
        raise ValueError(
            f"unknown attention plugin {name!r}; valid: none, {', '.join(list_attentions())}"
        )
    module, cls = _ATTENTIONS[name].rsplit(".", 1)
    return getattr(importlib.import_module(f"visionattn.attention.{module}"), cls)


def create_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build plugin ``name`` for a feature map of ``channels`` channels, outside any backbone.

    Plugins that need the feature size take ``feat_size=(H, W)``; conv plugins take
    ``out_channels`` and ``stride``. Only what the class checks itself is checked here; the
    checks of a config's knobs (``attn.<knob>``) are :func:`attention_factory`'s.
    """
    return get_attention(name)(channels, **kwargs)


# Set on each module an AttentionSpec builds: the plugin's name.
PLUGIN_MARK = "attention_plugin"


@dataclass(frozen=True)
class AttentionSpec:
    """A plugin class, its arguments and its placement: all a backbone needs to know.

    Calling it builds one plugin; backbones ask :meth:`selects` which blocks get one.
    """

    name: str
    cls: type[nn.Module]
    kwargs: dict = field(default_factory=dict)
    placement: Placement = field(default_factory=Placement)

    @property
    def kind(self) -> str:
        return self.cls.kind

    def selects(self, stage: int, index: int, depth: int) -> bool:
        """Whether block ``index`` of ``depth`` in stage ``stage`` (counted from 1) gets one."""
        return self.placement.selects(stage, index, depth)

    def __call__(
        self,
        channels: int,
        *,
        feat_size: Sequence[int] | None = None,
        where: str = "",
        **conv_args,
    ) -> nn.Module:
        """Build the plugin for ``channels`` channels at a ``feat_size`` feature map (the input's
        size; None when the backbone was built without ``img_size``), placed at ``where``."""
        kwargs = {**self.kwargs, **conv_args}
        # Only the plugins whose paper ties them to one size (learned position tables, Linformer's
        # projection, halo blocks) take feat_size; the others work at any size.
        takes_size = inspect.signature(self.cls).parameters.get("feat_size")
        if takes_size is not None:
            if feat_size is None and takes_size.default is inspect.Parameter.empty:
                raise ValueError(
                    f"attention {self.name!r} is built for one feature size: build the model "
                    "with img_size (model.img_size=<pixels> in the configs)"
                )
            if feat_size is not None:
                kwargs["feat_size"] = tuple(feat_size)
        try:
            module = self.cls(channels, **kwargs)
        except ValueError as error:
            if not where:
                raise
            message = str(error).removeprefix(f"{self.name}: ")
            raise ValueError(f"{self.name} at {where}: {message}") from None
        setattr(module, PLUGIN_MARK, self.name)
        return module


def is_plugin(module: nn.Module) -> bool:
    """Whether ``module`` is a plugin an :class:`AttentionSpec` placed. A model's own attention
    (HaloNet's halo layers) is of the same classes but part of the architecture."""
    return getattr(module, PLUGIN_MARK, None) is not None


def attention_factory(attn: "str | dict | AttentionSpec | None") -> AttentionSpec | None:
    """Turn ``attn`` (a name, a config dict with ``name``, the placement keys ``stages`` and
    ``blocks`` and the plugin's knobs, or None) into an :class:`AttentionSpec`.

    Unknown names, bad placements and bad knobs (:mod:`visionattn.attention.knobs`) fail here,
    when the model is built.
    """
    if isinstance(attn, AttentionSpec):
        return attn
    if isinstance(attn, str):
        attn = {"name": attn}
    if attn is None or attn.get("name") in (None, "none"):
        return None
    kwargs = dict(attn)
    name = kwargs.pop("name")
    cls = get_attention(name)
    placement = Placement.default(cls.kind)
    placement = Placement(
        stages=kwargs.pop("stages", placement.stages), blocks=kwargs.pop("blocks", placement.blocks)
    )
    check_knobs(name, cls, kwargs)
    return AttentionSpec(name, cls, kwargs, placement)
