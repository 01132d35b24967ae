"""Semantic segmentation: a ``features_only`` backbone, a decode head, an auxiliary head.

``create_segmentor(model, head, attn, num_classes)`` builds one from the same model and attn
configs as classification, plus a head config (``configs/head/*.yaml``).
"""

from visionattn.segmentation.heads import create_head, list_heads
from visionattn.segmentation.heads.attention import AttentionHead
from visionattn.segmentation.heads.deeplabv3 import DeepLabV3Head
from visionattn.segmentation.heads.fcn import FCNHead
from visionattn.segmentation.segmentor import Segmentor, create_segmentor

__all__ = [
    "AttentionHead",
    "DeepLabV3Head",
    "FCNHead",
    "Segmentor",
    "create_head",
    "create_segmentor",
    "list_heads",
]
