"""LightningModules, one task a file."""

from visionattn.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask"]
