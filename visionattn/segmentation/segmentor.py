"""A backbone and its segmentation heads: ``create_segmentor(model, head, attn, num_classes)``.

The backbone runs with ``features_only`` and returns two levels: its last, the input of the
decode head, and the one before, the stage of nominal stride 16 (ResNet's ``layer3``), the input
of an auxiliary FCN head whose loss supervises the middle of the network during training (Zhao et
al., PSPNet, CVPR 2017; mmseg's ``auxiliary_head``). Segmentation backbones are dilated to an
output stride of 8 (DeepLab, PSPNet, CCNet), so both levels are then at 1/8 of the image.

``attn_at`` says where the attention plugin goes: in the attention head only (``"head"``, the
backbone plain, as CCNet, DANet and ISA do), in the backbone as in classification
(``"backbone"``, placed by the plugin config's ``stages`` and ``blocks``), or in both.
"""

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import AttentionSpec, attention_factory
from visionattn.models import create_model
from visionattn.models.backbone import ceil_div, to_size
from visionattn.segmentation.heads import DecodeHead, create_head, get_head
from visionattn.segmentation.heads.fcn import FCNHead

ATTN_AT = ("head", "backbone", "both")
# The backbone levels the heads read: the stride-16 stage (auxiliary head), then the last one.
LEVELS = (-2, -1)
# The auxiliary head: mmseg's, on the stride-16 stage.
AUX_HEAD = dict(channels=256, num_convs=1, concat_input=False, dropout=0.1)


class Segmentor(nn.Module):
    """``backbone`` -> ``decode_head`` on the last level, ``aux_head`` on the one before.

    Args:
        backbone: a ``features_only`` backbone returning ``[aux level, last level]``.
        decode_head: the head on the last level.
        aux_head: the auxiliary head on the level before it, or None.
        aux_weight: the auxiliary loss's weight, kept for the task (the head exists when > 0).
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: DecodeHead,
        aux_head: DecodeHead | None = None,
        aux_weight: float = 0.4,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.aux_head = aux_head
        self.aux_weight = aux_weight
        self.num_classes = decode_head.num_classes
        self.output_stride = backbone.feature_info.reduction()[-1]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"out": logits}`` at the feature resolution (1 / ``output_stride`` of the images),
        with ``"aux"``, the auxiliary head's logits, in training mode when there is one."""
        aux_features, features = self.backbone(images)
        outputs = {"out": self.decode_head(features)}
        if self.training and self.aux_head is not None:
            outputs["aux"] = self.aux_head(aux_features)
        return outputs

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The decode head's logits upsampled to the images' size (bilinear, corners not
        aligned). Call it in eval mode; it changes no mode and keeps autograd as it finds it."""
        logits = self(images)["out"]
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def create_segmentor(
    model: dict,
    head: dict,
    attn: str | dict | None,
    num_classes: int,
    attn_at: str = "head",
    aux_weight: float = 0.4,
) -> Segmentor:
    """Build a :class:`Segmentor`.

    Args:
        model: the model config (``configs/model/*.yaml``): ``name`` and the backbone's
            arguments (``pretrained``, ``output_stride``, ``img_size``, ``layers``, ...), passed to
            :func:`visionattn.create_model`. ``img_size`` (the training crop, an int or
            ``[h, w]``) gives the feature size of plugins tied to one size.
        head: the head config (``configs/head/*.yaml``): ``name``, one of
            :func:`~visionattn.segmentation.heads.list_heads`, and the head's knobs.
        attn: the plugin (a name, an attn config dict, or None / ``"none"``).
        num_classes: classes to segment.
        attn_at: ``"head"`` (the attention head holds the plugin), ``"backbone"`` (the backbone
            does, as in classification) or ``"both"``.
        aux_weight: weight of the auxiliary loss; the auxiliary head is built when it is > 0.
    """
    if attn_at not in ATTN_AT:
        raise ValueError(f"attn_at must be one of {', '.join(ATTN_AT)}, got {attn_at!r}")
    kwargs = dict(head)
    head_name = kwargs.pop("name", None)
    get_head(head_name)  # an unknown name fails here, listing the valid ones
    spec = attention_factory(attn)
    in_head = spec if attn_at in ("head", "both") else None
    if in_head is not None and head_name != "attention":
        raise ValueError(
            f"attention {spec.name!r} at {attn_at!r} needs a head that holds a plugin: use "
            f"head=attention, or task.attn_at=backbone to place it in the backbone with the "
            f"{head_name} head"
        )

    backbone = _backbone(dict(model), spec if attn_at in ("backbone", "both") else None)
    channels = backbone.feature_info.channels()
    stride = backbone.feature_info.reduction()[-1]
    if head_name == "attention":
        kwargs["attn"] = in_head
        kwargs["feat_size"] = ceil_div(to_size(model.get("img_size")), stride)
    elif head_name == "deeplabv3":
        kwargs.setdefault("output_stride", stride)
    decode_head = create_head(head_name, channels[-1], num_classes, **kwargs)
    aux_head = FCNHead(channels[-2], num_classes, **AUX_HEAD) if aux_weight > 0 else None
    return Segmentor(backbone, decode_head, aux_head, aux_weight)


def _backbone(model: dict, spec: AttentionSpec | None) -> nn.Module:
    """The backbone, returning its last two levels."""
    name = model.pop("name")
    return create_model(name, attn=spec, features_only=True, out_indices=LEVELS, **model)
