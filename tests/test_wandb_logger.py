from hydra.utils import instantiate

from tests.helpers import compose_config
from visionattn.wandb_logger import WandbLogger


def test_the_wandb_config_builds_ours_without_anonymous(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config(["logger=wandb", f"paths.output_dir={tmp_path}"])
    logger = instantiate(cfg.logger.wandb)  # builds no wandb run until first used
    assert type(logger) is WandbLogger
    assert "anonymous" not in logger._wandb_init
    assert logger._wandb_init["project"] == "visionattn"
