"""Datasets and LightningDataModules; batches are dicts with ``image`` and ``label``."""

from visionattn.data.ade20k import ADE20KDataModule, ADE20KSegmentation
from visionattn.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from visionattn.data.cityscapes import CityscapesDataModule, CityscapesSegmentation
from visionattn.data.classification import (
    ClassificationDataModule,
    UnreadableImage,
    decode_image,
)
from visionattn.data.datamodule import ImageDataModule
from visionattn.data.download import DatasetError
from visionattn.data.imagefolder import ImageFolderDataModule
from visionattn.data.segmentation import SegmentationDataModule, voc_palette
from visionattn.data.shapes import SHAPES, ShapesDataset
from visionattn.data.shapes_datamodule import ShapesDataModule
from visionattn.data.shapes_segmentation import ShapesSegmentationDataModule
from visionattn.data.voc import VOCDataModule, VOCSegmentation
from visionattn.data.webdataset import WebDatasetDataModule

__all__ = ["SHAPES", "DatasetError", "ImageDataModule", "ShapesDataModule", "ShapesDataset"]
# Classification: batches with ``image`` and ``label``.
__all__ += [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "ImageFolderDataModule",
    "UnreadableImage",
    "WebDatasetDataModule",
    "decode_image",
]
# Semantic segmentation: batches with ``image`` and ``mask``.
__all__ += [
    "ADE20KDataModule",
    "ADE20KSegmentation",
    "CityscapesDataModule",
    "CityscapesSegmentation",
    "SegmentationDataModule",
    "ShapesSegmentationDataModule",
    "VOCDataModule",
    "VOCSegmentation",
    "voc_palette",
]
