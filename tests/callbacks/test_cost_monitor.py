import time

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tests.helpers import column, read_metrics
from visionattn.callbacks import CostMonitor

BATCH = 4


class SlowData(Dataset):
    def __init__(self, length: int, delay: float) -> None:
        self.length, self.delay = length, delay

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        time.sleep(self.delay)
        return {"image": torch.randn(3, 8, 8), "label": i % 2}


class SlowModel(L.LightningModule):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))

    def forward(self, x):
        time.sleep(self.delay)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self(batch["image"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, data_delay: float, model_delay: float) -> tuple[CostMonitor, L.Trainer]:
    monitor = CostMonitor()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=CSVLogger(tmp_path, name="csv"),
        callbacks=[monitor],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = DataLoader(SlowData(6 * BATCH, data_delay), batch_size=BATCH)
    trainer.fit(SlowModel(model_delay), train_dataloaders=loader)
    return monitor, trainer


def test_waiting_for_data_is_not_counted_as_compute(tmp_path):
    monitor, _ = fit(tmp_path, data_delay=0.01, model_delay=0.0)
    summary = monitor.train_summary
    assert summary["data_time"] >= BATCH * 0.01 * 0.9
    assert summary["step_time"] < summary["data_time"] / 2


def test_compute_is_timed_and_throughput_is_images_per_compute_second(tmp_path):
    monitor, _ = fit(tmp_path, data_delay=0.0, model_delay=0.03)
    summary = monitor.train_summary
    assert summary["step_time"] >= 0.03
    assert summary["data_time"] < 0.01
    assert summary["images"] == 6 * BATCH
    assert summary["throughput_per_device"] == pytest.approx(BATCH / summary["step_time"])
    assert summary["throughput"] == pytest.approx(summary["throughput_per_device"])  # one device
    assert summary["throughput"] < BATCH / 0.03


def test_logs_model_cost_once_and_step_and_epoch_figures(tmp_path):
    monitor, _ = fit(tmp_path, data_delay=0.0, model_delay=0.0)
    rows = read_metrics(tmp_path)
    assert column(rows, "model/params") == [3 * 8 * 8 * 2 + 2]
    assert column(rows, "model/flops") == [2 * 3 * 8 * 8 * 2]
    assert len(column(rows, "train/throughput_step")) == 6
    for key in ("throughput", "throughput_per_device", "step_time", "data_time", "peak_memory_mb"):
        assert column(rows, f"train/{key}_epoch") == [pytest.approx(monitor.train_summary[key])]


def test_validate_measures_the_validation_batches(tmp_path):
    monitor = CostMonitor()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[monitor], enable_progress_bar=False
    )
    loader = DataLoader(SlowData(3 * BATCH, 0.0), batch_size=BATCH)
    trainer.validate(SlowModel(0.02), dataloaders=loader, verbose=False)
    assert monitor.val_summary["images"] == 3 * BATCH
    assert monitor.val_summary["step_time"] >= 0.02
    assert monitor.params == 3 * 8 * 8 * 2 + 2
    assert monitor.val_summary["peak_memory_mb"] > 0
