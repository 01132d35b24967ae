"""A stand-in plugin that records where a backbone put it: what it was built with and given."""

import torch
from torch import nn

from visionattn.attention import AttentionSpec
from visionattn.attention.placement import Placement


class Recorder(nn.Module):
    kind = "gate"

    def __init__(self, channels: int, *, feat_size=None, out_channels=None, stride=1) -> None:
        super().__init__()
        self.channels, self.out_channels = channels, out_channels
        self.feat_size, self.stride = feat_size, stride
        if self.kind == "conv":
            self.conv = nn.Conv2d(channels, out_channels, 3, stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(x.shape[1:])
        return self.conv(x) if self.kind == "conv" else x


def recording(kind: str, stages="all", blocks="all") -> AttentionSpec:
    """A placement of a :class:`Recorder` of ``kind``."""
    plugin = type(f"{kind}_recorder", (Recorder,), {"kind": kind})
    return AttentionSpec(kind, plugin, placement=Placement(stages, blocks))
