from types import SimpleNamespace

import torch

from tests.helpers import compose_config
from visionattn.callbacks import CompactProgressBar


def metrics_shown(logged: dict[str, float]) -> dict[str, str]:
    trainer = SimpleNamespace(callback_metrics={k: torch.tensor(v) for k, v in logged.items()})
    return CompactProgressBar().get_metrics(trainer, None)


def test_only_the_loss_and_the_score_are_shown_rounded():
    logged = {
        "train/loss_step": 0.51234,
        "train/loss_epoch": 0.6,
        "train/lr": 0.001,
        "val/acc1": 0.97051,
        "val/acc5": 0.9995,
        "val/loss": 0.3,
    }
    shown = metrics_shown(logged)
    assert shown == {"loss": "0.512", "acc1": "0.971"}
    line = " ".join(f"{k}: {v}" for k, v in shown.items())
    assert len(line) < 30  # beside the bar's own 50 columns, within 80
    assert metrics_shown({"train/loss_step": 1.0, "val/miou": 0.5}) == {
        "loss": "1.000",
        "miou": "0.500",
    }
    assert metrics_shown({}) == {}  # before the first step


def test_the_default_callbacks_build_it():
    cfg = compose_config(["paths.output_dir=/tmp/x"])
    assert cfg.callbacks.progress_bar._target_ == "visionattn.callbacks.CompactProgressBar"


def test_the_wandb_logger_passes_no_anonymous_setting(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config([f"paths.output_dir={tmp_path}", "logger=wandb"])
    logger = instantiate(cfg.logger.wandb)
    assert "anonymous" not in logger._wandb_init
    assert logger._wandb_init["project"] == cfg.logger.wandb.project
