"""Lightning callbacks, one idea a file."""

from visionattn.callbacks.cost_monitor import CostMonitor
from visionattn.callbacks.segmentation_overlays import SegmentationOverlays
from visionattn.callbacks.skipped_images import SkippedImages
from visionattn.callbacks.store_config import CONFIG_KEY, StoreConfig

__all__ = ["CONFIG_KEY", "CostMonitor", "SegmentationOverlays", "SkippedImages", "StoreConfig"]
