"""LightningModules, one task a file."""

from visionattn.tasks.classification import ClassificationTask
from visionattn.tasks.segmentation import SegmentationTask

__all__ = ["ClassificationTask", "SegmentationTask"]
