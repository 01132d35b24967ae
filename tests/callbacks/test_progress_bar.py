import io
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from rich.progress import Progress, TextColumn

from visionattn.callbacks import CompactProgressBar

CLASSIFICATION = {
    "train/loss": torch.tensor(0.51234),
    "train/loss_step": torch.tensor(0.51234),
    "train/loss_epoch": torch.tensor(0.70456),
    "train/lr": torch.tensor(6e-5),
    "val/acc1": torch.tensor(0.68359),
    "val/acc5": torch.tensor(1.0),
    "val/loss": torch.tensor(0.66812),
}


def metrics(logged: dict) -> dict:
    trainer = SimpleNamespace(callback_metrics=logged, loggers=[])
    return CompactProgressBar().get_metrics(trainer, None)


def test_classification_shows_the_loss_and_acc1_rounded():
    assert metrics(CLASSIFICATION) == {"loss": 0.512, "acc1": 0.684}


def test_segmentation_shows_miou():
    logged = {"train/loss": torch.tensor(1.23456), "val/miou": torch.tensor(0.4321), "v_num": 3}
    assert metrics(logged) == {"loss": 1.235, "miou": 0.432}


def test_before_validation_only_the_loss():
    assert metrics({"train/loss_step": torch.tensor(2.0)}) == {"loss": 2.0}


@pytest.mark.parametrize("batches", [32, 157, 2502])
def test_the_bar_fits_one_line_of_80_columns(batches):
    bar = CompactProgressBar()
    out = io.StringIO()
    bar._console = console = Console(file=out, width=80)
    text = " ".join(f"{k}: {v:.3f}" for k, v in metrics(CLASSIFICATION).items())
    progress = Progress(*bar.configure_columns(None), TextColumn(text), console=console)
    progress.add_task("Epoch 19/19", total=batches, completed=batches)
    console.print(progress.make_tasks_table(progress.tasks))
    assert out.getvalue().count("\n") == 1, out.getvalue()
    assert "acc1: 0.684" in out.getvalue()
