"""Datasets and LightningDataModules; batches are dicts with ``image`` and ``label``."""

from visionattn.data.ade20k import ADE20KDataModule, ADE20KSegmentation
from visionattn.data.cityscapes import CityscapesDataModule, CityscapesSegmentation
from visionattn.data.datamodule import ImageDataModule
from visionattn.data.segmentation import DatasetError, SegmentationDataModule, voc_palette
from visionattn.data.shapes import SHAPES, ShapesDataset
from visionattn.data.shapes_datamodule import ShapesDataModule
from visionattn.data.shapes_segmentation import ShapesSegmentationDataModule
from visionattn.data.voc import VOCDataModule, VOCSegmentation

__all__ = ["SHAPES", "ImageDataModule", "ShapesDataModule", "ShapesDataset"]
# Semantic segmentation: batches with ``image`` and ``mask``.
__all__ += [
    "ADE20KDataModule",
    "ADE20KSegmentation",
    "CityscapesDataModule",
    "CityscapesSegmentation",
    "DatasetError",
    "SegmentationDataModule",
    "ShapesSegmentationDataModule",
    "VOCDataModule",
    "VOCSegmentation",
    "voc_palette",
]
