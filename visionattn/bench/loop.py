"""Lightning's training loop against a plain PyTorch loop: the same model, data, loss, optimiser
and number of steps, so the difference is what the Trainer's machinery costs a step.

Both loops time each step from the start of one batch to the start of the next (data, forward,
backward, step and whatever the loop does between), and the figure is the median step after
warm-up, the two loops run in alternation. The Lightning run is a bare ``LightningModule`` on a
Trainer with no logger, checkpoint, progress bar or validation: what any Lightning run pays.
"""

import itertools
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionattn.measure import synchronize


class _Module(L.LightningModule):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return self.criterion(self.model(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)


class _StepClock(Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self.starts.append(time.perf_counter())


def _loader(batch: int, image_size: int, steps: int, num_classes: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch * steps, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (batch * steps,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch)


def plain_loop(model: nn.Module, loader: DataLoader, device: torch.device) -> list[float]:
    """Seconds of each step of one epoch of ``loader``."""
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    starts = []
    synchronize(device)
    starts.append(time.perf_counter())
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        criterion(model(images), labels).backward()
        optimizer.step()
        synchronize(device)
        starts.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(starts)]


def lightning_loop(model: nn.Module, loader: DataLoader, device: torch.device) -> list[float]:
    clock = _StepClock()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(_Module(model), train_dataloaders=loader)
    return [b - a for a, b in itertools.pairwise(clock.starts)]


def compare_loops(
    build: Callable[[], nn.Module],
    name: str,
    batch: int,
    image_size: int,
    steps: int,
    rounds: int,
    device: torch.device,
    num_classes: int = 1000,
) -> dict:
    """Median step of each loop, ``rounds`` epochs of ``steps`` steps each, alternating; the
    first two steps of every epoch are warm-up."""
    loader = _loader(batch, image_size, steps, num_classes)
    times: dict[str, list[float]] = {"plain": [], "lightning": []}
    for _ in range(rounds):
        times["plain"] += plain_loop(build(), loader, device)[2:]
        times["lightning"] += lightning_loop(build(), loader, device)[2:]
    plain, lightning = (statistics.median(times[k]) * 1e3 for k in ("plain", "lightning"))
    return {
        "model": name,
        "batch": batch,
        "image_size": image_size,
        "steps": len(times["plain"]),
        "plain_ms": plain,
        "lightning_ms": lightning,
        "overhead": lightning / plain - 1,
    }
