"""Lightning callbacks, one idea a file."""

from visionattn.callbacks.batchnorm_stats import AverageBatchNormStats
from visionattn.callbacks.cost_monitor import CostMonitor
from visionattn.callbacks.preemption import Preemption
from visionattn.callbacks.progress_bar import CompactProgressBar
from visionattn.callbacks.resume_state import ResumeState, saved_wandb_run_id, saved_world_size
from visionattn.callbacks.segmentation_overlays import SegmentationOverlays
from visionattn.callbacks.skipped_images import SkippedImages
from visionattn.callbacks.store_config import CONFIG_KEY, StoreConfig

__all__ = [
    "CONFIG_KEY",
    "AverageBatchNormStats",
    "CompactProgressBar",
    "CostMonitor",
    "Preemption",
    "ResumeState",
    "SegmentationOverlays",
    "SkippedImages",
    "StoreConfig",
    "saved_wandb_run_id",
    "saved_world_size",
]
