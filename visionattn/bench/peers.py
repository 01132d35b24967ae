"""Our plugins and models next to timm's and torchvision's builds of the same thing.

A latency ratio only means something when both sides compute the same function with the same
parameters, so each pair fixes the peer's arguments to match our paper defaults (and, where the
peer has no option for it, ours to match the peer). What still differs is said in the pair's
``note``, and ``tests/bench/test_peers.py`` checks every note: equal parameter counts, or the
stated difference; equal outputs with copied weights, or exactly where they differ.
"""

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torchvision
from timm.layers import EcaModule, GlobalContext, NonLocalAttn, SelectiveKernel, SEModule
from timm.layers.cbam import CbamModule
from timm.layers.coord_attn import CoordAttn
from timm.layers.halo_attn import HaloAttn
from torch import nn

from visionattn.attention import create_attention
from visionattn.attention.eca import adaptive_kernel_size
from visionattn.models import create_model

PluginBuilder = Callable[[int, tuple[int, int]], nn.Module]
ModelBuilder = Callable[[int], nn.Module]


@dataclass(frozen=True)
class PluginPeer:
    """One of our attention plugins and timm's module for the same paper."""

    name: str  # our plugin name, as in visionattn.list_attentions()
    source: str  # the peer's dotted class path
    ours: PluginBuilder  # (channels, (H, W)) -> our module
    theirs: PluginBuilder  # (channels, (H, W)) -> timm's module
    note: str  # the settings matched, and any remaining difference


@dataclass(frozen=True)
class ModelPeer:
    """One of our models and the other libraries' builds of the same architecture."""

    name: str
    ours: ModelBuilder  # num_classes -> our model
    others: dict[str, ModelBuilder]  # library -> its model, where it has one
    note: str


def _ours(name: str, **kwargs) -> PluginBuilder:
    """Our plugin ``name`` at its paper defaults (the class defaults), plus ``kwargs``."""
    return lambda channels, feat_size: create_attention(name, channels, **kwargs)


def _ours_conv(name: str, **kwargs) -> PluginBuilder:
    """A conv plugin standing in for a same-width, stride-1 3x3 conv."""
    return lambda channels, feat_size: create_attention(
        name, channels, out_channels=channels, stride=1, **kwargs
    )


def _halo(channels: int, feat_size: tuple[int, int]) -> nn.Module:
    return create_attention(
        "halo", channels, out_channels=channels, stride=1, feat_size=tuple(feat_size)
    )


# Hidden widths are passed to timm as numbers: its defaults round C / r to a multiple of 8 (or
# use another r), and our classes floor C / r as the papers do.
PLUGIN_PEERS: dict[str, PluginPeer] = {
    peer.name: peer
    for peer in (
        PluginPeer(
            name="se",
            source="timm.layers.SEModule",
            ours=_ours("se"),
            theirs=lambda c, size: SEModule(c, rd_channels=max(1, c // 16)),
            note="Same function and parameters: hidden width C // 16 (timm's default rounds it "
            "to a multiple of 8).",
        ),
        PluginPeer(
            name="eca",
            source="timm.layers.EcaModule",
            ours=_ours("eca"),
            # timm's own rule gives the same k from 8 channels up, but floors k at 3 below.
            theirs=lambda c, size: EcaModule(channels=None, kernel_size=adaptive_kernel_size(c)),
            note="Same function and parameters: timm gets our adaptive k (its own rule agrees "
            "from C = 8 up and floors k at 3 below).",
        ),
        PluginPeer(
            name="cbam",
            source="timm.layers.cbam.CbamModule",
            ours=_ours("cbam"),
            theirs=lambda c, size: CbamModule(c, rd_channels=max(1, c // 16), mlp_bias=True),
            note="Differs: MLP matched (C // 16, with biases); timm's 7x7 spatial conv has a "
            "BatchNorm where ours has a bias: +1 parameter, equal in eval with the BN folded into "
            "our conv, not in training (batch statistics).",
        ),
        PluginPeer(
            name="gc",
            source="timm.layers.GlobalContext",
            ours=_ours("gc"),
            # Ours adds the transformed context, the paper's default fusion; timm's default
            # multiplies by a sigmoid of it.
            theirs=lambda c, size: GlobalContext(
                c, fuse_add=True, fuse_scale=False, rd_channels=c // 16
            ),
            note="Differs: add fusion (timm's default is a sigmoid scale), C // 16; timm's "
            "attention-logit conv has a bias (+1 parameter, the softmax cancels it) and its "
            "LayerNorm eps is 1e-6 (ours 1e-5).",
        ),
        PluginPeer(
            name="nonlocal",
            source="timm.layers.NonLocalAttn",
            # timm attends to every position; ours has the paper's 2x2 max-pool as an option.
            ours=_ours("nonlocal", sub_sample=False),
            theirs=lambda c, size: NonLocalAttn(c, use_scale=False, rd_channels=max(1, c // 2)),
            note="Same function, timm +C parameters: ours without subsampling, timm unscaled at "
            "C // 2; timm's W_z conv has a bias that its BN cancels in training and folds into "
            "the running mean in eval.",
        ),
        PluginPeer(
            name="sk",
            source="timm.layers.SelectiveKernel",
            ours=_ours_conv("sk"),
            theirs=lambda c, size: SelectiveKernel(
                c,
                c,
                kernel_size=[3, 5],  # keep_3x3: the 5x5 branch is a 3x3 with dilation 2
                stride=1,
                groups=32,
                split_input=False,
                rd_channels=max(c // 16, 32),
            ),
            note="Same function and parameters: 3x3 branches at dilations 1 and 2, 32 groups, "
            "the whole input to each branch (timm splits it by default), fuse width "
            "max(C // 16, 32).",
        ),
        PluginPeer(
            name="coordatt",
            source="timm.layers.coord_attn.CoordAttn",
            ours=_ours("coordatt"),
            # One bias flag covers timm's three convs; without biases the gates lose theirs.
            theirs=lambda c, size: CoordAttn(c, rd_channels=max(8, c // 32), bias=True),
            note="Same function, timm +max(8, C // 32) parameters: hidden width max(8, C // 32); "
            "timm's first conv has a bias that its BN cancels in training and folds into the "
            "running mean in eval.",
        ),
        PluginPeer(
            name="halo",
            source="timm.layers.halo_attn.HaloAttn",
            ours=_halo,
            theirs=lambda c, size: HaloAttn(
                c,
                c,
                feat_size=tuple(size),
                stride=1,
                num_heads=8,
                block_size=8,
                halo_size=3,
                scale_pos_embed=True,  # position logits scaled by 1/sqrt(d), as ours
            ),
            note="Differs: same projections and scaling; timm's position tables hold 2h rows "
            "per axis that no query reaches (+1.5 C parameters) and its border blocks attend to "
            "the zero-padded halo, which ours masks: outputs agree on inner blocks only.",
        ),
    )
}


MODEL_PEERS: dict[str, ModelPeer] = {
    peer.name: peer
    for peer in (
        ModelPeer(
            name="resnet50",
            ours=lambda n: create_model("resnet50", attn=None, num_classes=n),
            others={
                "timm": lambda n: timm.create_model("resnet50", num_classes=n),
                "torchvision": lambda n: torchvision.models.resnet50(num_classes=n),
            },
            note="Same architecture and state-dict keys in all three.",
        ),
        ModelPeer(
            name="mobilenetv2_100",
            ours=lambda n: create_model("mobilenetv2_100", attn=None, num_classes=n),
            others={
                "timm": lambda n: timm.create_model("mobilenetv2_100", num_classes=n),
                "torchvision": lambda n: torchvision.models.mobilenet_v2(num_classes=n),
            },
            note="Same architecture: torchvision's keys are ours, timm's are renamed by our "
            "loader.",
        ),
        ModelPeer(
            name="seresnet50",
            ours=lambda n: create_model("resnet50", attn="se", num_classes=n),
            others={"timm": lambda n: timm.create_model("seresnet50", num_classes=n)},
            note="Same architecture: SE (C // 16, all multiples of 8 here) after the last BN of "
            "every bottleneck; torchvision has no SE-ResNet.",
        ),
    )
}
