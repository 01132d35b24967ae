"""visionattn: vision backbones with pluggable attention, trained and measured the same way."""

from visionattn.attention import create_attention, list_attentions
from visionattn.models import create_model, list_models

__all__ = ["create_attention", "create_model", "list_attentions", "list_models"]
__version__ = "0.1.0"
