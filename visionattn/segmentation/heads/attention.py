"""A head that applies any attention plugin of the zoo, in the layout of CCNet's RCCA head.
Huang, Wang, Huang, Huang, Wei and Liu, CCNet: Criss-Cross Attention for Semantic Segmentation,
ICCV 2019, https://arxiv.org/abs/1811.11721 (Sec. 3.1, Fig. 2).

On the backbone's output ``X`` (2048 channels on a ResNet):

    H = conv3x3-BN-ReLU(X)                 reduce to ``channels`` = in / 4 (512 on 2048)
    H = plugin(H)                          RCCA: criss-cross attention, R = 2, shared weights
    H = conv3x3-BN-ReLU(H)
    out = conv3x3-BN-ReLU(cat[X, H])       the bottleneck, back to ``channels``
    logits = conv1x1(dropout(out))         dropout 0.1

which is the authors' ``RCCAModule(2048, 512, num_classes)`` (their code normalises with
InPlaceABN, whose activation is a leaky ReLU; mmseg's ``CCHead`` and this head use ReLU) and
mmseg's ``CCHead``. With ``attn=ccnet`` (its config has ``recurrence: 2``) this is CCNet's head;
with no plugin it is the same head without attention, the baseline the paper compares with.

Where the plugin goes depends on its kind: a gate or a context plugin sits between the two 3x3
convs (CCNet's place for RCCA); a conv plugin replaces the second 3x3 conv, keeping its BN and
ReLU. The ``stages`` and ``blocks`` of a plugin's config place it in a backbone and mean nothing
here. Plugins tied to one feature size (Linformer, BoT, AA, halo) take ``feat_size``, the map size
of the head's input (the segmentor derives it from the training crop and the output stride).

Other papers' heads, compared with what this head gives for their plugin:

- ``nonlocal``: mmseg's ``NLHead`` is this layout exactly. Its non-local block does not subsample
  phi and g (``attn.sub_sample=false``) and scales the logits by 1 / sqrt(C / 2).
- ``gc``: mmseg's ``GCHead`` is this layout exactly, with the transform's ratio 1/4
  (``attn.reduction=4``; the config's 16 is the classification backbone's).
- ``danet``: DANet's head (the paper's Fig. 2, mmseg's ``DAHead``) gives each branch its own
  reduce and post 3x3 convs, sums the two branches' outputs, does not concatenate the input, and
  adds one classifier per branch for extra losses. Here one reduce conv and one post conv serve
  both branches, which the plugin sums inside one zero-init residual.
- ``issa``: ISA's head (mmseg's ``ISAHead``) has no 3x3 conv after the attention and fuses the
  attention's output with the reduced map (not the head input) by a 1x1 conv; its relations add
  BN-ReLU convs around the queries, keys and output.
"""

from collections.abc import Sequence

import torch
from torch import nn

from visionattn.attention import AttentionSpec, attention_factory
from visionattn.models.backbone import plugin_or_identity, spatial_op, to_size
from visionattn.segmentation.heads.decode_head import DecodeHead, conv_bn_relu


class AttentionHead(DecodeHead):
    """``classify(bottleneck(cat[x, post(plugin(reduce(x)))]))``.

    Args:
        in_channels: channels of the input features.
        num_classes: classifier outputs.
        channels: width of every conv and of the plugin; None gives ``in_channels // 4``, as
            CCNet (512 on ResNet's 2048).
        dropout: dropout before the classifier.
        attn: the plugin: a name, a config dict with ``name`` and the plugin's knobs, an
            :class:`~visionattn.attention.AttentionSpec`, or None for the head without one.
        feat_size: the size of the input map, for plugins tied to one size.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int | None = None,
        dropout: float = 0.1,
        attn: str | dict | AttentionSpec | None = None,
        feat_size: int | Sequence[int] | None = None,
    ) -> None:
        channels = max(1, in_channels // 4) if channels is None else channels
        super().__init__(in_channels, num_classes, channels=channels, dropout=dropout)
        spec = attention_factory(attn)
        size = to_size(feat_size)
        self.reduce = conv_bn_relu(in_channels, channels)
        self.attn = (
            nn.Identity()
            if spec is None or spec.kind == "conv"
            else plugin_or_identity(spec, spec.kind, channels, size, "the decode head")
        )
        conv = spatial_op(
            spec,
            lambda: nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            channels, channels, 1, size, "the decode head",
        )  # fmt: skip
        self.post = nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.bottleneck = conv_bn_relu(in_channels + channels, channels)
        self.init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.post(self.attn(self.reduce(x)))
        return self.bottleneck(torch.cat([x, out], dim=1))
