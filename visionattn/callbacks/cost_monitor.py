"""What a run costs: parameters and FLOPs once, then throughput, step time, data wait and memory.

Written here because Lightning's ``ThroughputMonitor`` times from batch to batch, so its
images/s include the wait for data; we report the two apart.
"""

import time
from dataclasses import dataclass, field

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from visionattn.measure import (
    count_flops,
    count_parameters,
    peak_memory_mb,
    reset_peak_memory,
    synchronize,
)


@dataclass
class Meter:
    """Images and seconds of a stretch of batches, the compute apart from the wait for data.

    ``compute_s`` runs from the moment a batch is in hand to the end of its step (forward, and
    backward and optimiser step when training); ``data_s`` from the end of one step to the next
    batch in hand.
    """

    images: int = 0
    steps: int = 0
    compute_s: float = 0.0
    data_s: float = 0.0
    last_compute_s: float = 0.0
    last_data_s: float = 0.0
    _ready: float = field(default_factory=time.perf_counter, repr=False)
    _start: float = field(default=0.0, repr=False)

    def data_ready(self) -> None:
        self.last_data_s = time.perf_counter() - self._ready
        self.data_s += self.last_data_s

    def compute_start(self) -> None:
        self._start = time.perf_counter()

    def batch_end(self, images: int) -> None:
        self._ready = time.perf_counter()
        self.last_compute_s = self._ready - self._start
        self.compute_s += self.last_compute_s
        self.images += images
        self.steps += 1

    @property
    def throughput(self) -> float:
        """Images per second of compute."""
        return self.images / self.compute_s if self.compute_s else 0.0


class CostMonitor(Callback):
    """Logs under ``model/`` once and under ``train/`` per step and per epoch; batches are dicts
    with an ``image`` tensor.

    Keys: ``model/params`` (of the module's ``model`` where it has one: a task's EMA copy is not
    counted), ``model/flops`` (the module's forward of one image); ``train/throughput`` (images/s,
    all devices) and ``train/throughput_per_device``, ``train/step_time`` and ``train/data_time``
    (seconds a step), ``train/peak_memory_mb``; each with a ``_step`` and an ``_epoch`` value.

    After ``trainer.validate`` (as in ``eval.py``) the same figures for validation batches are in
    :attr:`val_summary`. On CUDA every step is synchronised, so the clocks time the kernels.
    """

    def __init__(self) -> None:
        self.params: int | None = None
        self.flops: int | None = None
        self.train_summary: dict[str, float] = {}
        self.val_summary: dict[str, float] = {}
        self._meter = Meter()

    def _count_model(self, trainer: L.Trainer, pl_module: L.LightningModule, batch) -> None:
        if self.flops is not None:
            return
        # A task's trained ``model`` alone: the whole module would count its EMA copy too. Its
        # forward runs ``model`` only, compiled or not: dynamo leaves frames run under a dispatch
        # mode such as FlopCounterMode to eager Python, so every aten op is counted.
        self.params = count_parameters(getattr(pl_module, "model", pl_module))
        self.flops = count_flops(pl_module, batch["image"])
        for logger in trainer.loggers:
            logger.log_metrics({"model/params": self.params, "model/flops": self.flops}, step=0)

    def _summary(self, trainer: L.Trainer, device: torch.device) -> dict[str, float]:
        """Figures of the meter so far; throughput summed and peak memory maxed over devices."""
        m = self._meter

        def across_devices(value: float, reduce_op: str) -> float:
            value = torch.tensor(value, dtype=torch.float64, device=device)
            return float(trainer.strategy.reduce(value, reduce_op=reduce_op))

        return {
            "throughput": across_devices(m.throughput, "sum"),
            "throughput_per_device": m.throughput,
            "step_time": m.compute_s / max(m.steps, 1),
            "data_time": m.data_s / max(m.steps, 1),
            "peak_memory_mb": across_devices(peak_memory_mb(device), "max"),
            "images": m.images,
        }

    # training -------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reset_peak_memory(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._meter = Meter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._meter.data_ready()
        self._count_model(trainer, pl_module, batch)
        synchronize(pl_module.device)
        self._meter.compute_start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self._meter.batch_end(len(batch["image"]))
        m = self._meter
        per_device = len(batch["image"]) / m.last_compute_s
        pl_module.log_dict(
            {
                "train/throughput_step": per_device * trainer.world_size,
                "train/throughput_per_device_step": per_device,
                "train/step_time_step": m.last_compute_s,
                "train/data_time_step": m.last_data_s,
                "train/peak_memory_mb_step": peak_memory_mb(pl_module.device),
            },
            on_step=True,
            on_epoch=False,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_summary = self._summary(trainer, pl_module.device)
        summary = {k: v for k, v in self.train_summary.items() if k != "images"}
        pl_module.log_dict({f"train/{k}_epoch": v for k, v in summary.items()}, on_epoch=True)

    # validation outside fit (eval.py) -----------------------------------------------------------

    def _measuring_validation(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.VALIDATING and not trainer.sanity_checking

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._measuring_validation(trainer):
            reset_peak_memory(pl_module.device)
            self._meter = Meter()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._measuring_validation(trainer):
            self._meter.data_ready()
            self._count_model(trainer, pl_module, batch)
            synchronize(pl_module.device)
            self._meter.compute_start()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if self._measuring_validation(trainer):
            synchronize(pl_module.device)
            self._meter.batch_end(len(batch["image"]))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._measuring_validation(trainer):
            self.val_summary = self._summary(trainer, pl_module.device)
