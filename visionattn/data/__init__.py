"""Datasets and LightningDataModules; batches are dicts with ``image`` and ``label``."""

from visionattn.data.datamodule import ImageDataModule
from visionattn.data.shapes import SHAPES, ShapesDataset
from visionattn.data.shapes_datamodule import ShapesDataModule

__all__ = ["SHAPES", "ImageDataModule", "ShapesDataModule", "ShapesDataset"]
