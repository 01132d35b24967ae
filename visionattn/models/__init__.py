"""Backbones that take an attention factory and never import a plugin by name."""

from visionattn.models.factory import create_model, list_models

__all__ = ["create_model", "list_models"]
