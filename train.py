"""Train a backbone with an attention plugin: ``python train.py [group=option ...] [key=value]``.

Everything of the run lands in its directory (``hydra.run.dir``): the resolved config.yaml,
metrics.csv, wandb/, train.log and checkpoints/{best,last}.ckpt.
"""

import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here so that a mistyped option fails at once, before torch loads.
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import WandbLogger

    from visionattn.callbacks import CostMonitor, SkippedImages, StoreConfig
    from visionattn.checkpoint import CheckpointError, load_checkpoint
    from visionattn.data import DatasetError
    from visionattn.report import cost_rows, display_path, eval_command, print_report

    if cfg.ckpt_path:
        try:
            load_checkpoint(cfg.ckpt_path)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None

    if "wandb" in (cfg.logger or {}):
        # wandb's process-wide telemetry follows WANDB_MODE, not the logger's mode: keep them in
        # step, or an offline run still posts telemetry to wandb's server.
        os.environ["WANDB_MODE"] = cfg.logger.wandb.mode

    L.seed_everything(cfg.seed, workers=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    output_dir = Path(cfg.paths.output_dir)
    OmegaConf.save(config, output_dir / "config.yaml")

    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    skipped = SkippedImages()
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    callbacks += [StoreConfig(config), skipped]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(config)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    started = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    except DatasetError as e:  # raised by the datamodule's setup, before the first step
        raise SystemExit(f"error: {e}") from None
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score if checkpoint else None
    best = None if best is None else float(best)
    cost = next((c for c in trainer.callbacks if isinstance(c, CostMonitor)), CostMonitor())
    rows = [
        *task.summary_rows(task.summary(metrics), best),
        *cost_rows(cost.train_summary, cost.params, cost.flops),
        ("wall time", f"{minutes} min {seconds} s (training and validation)"),
        *skipped.rows(),
        ("run dir", display_path(output_dir)),
    ]
    footer = []
    if checkpoint and checkpoint.best_model_path:
        rows.append(("checkpoint", display_path(checkpoint.best_model_path)))
        footer = ["Evaluate it with:", f"  {eval_command(checkpoint.best_model_path)}"]
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
    choices = HydraConfig.get().runtime.choices
    title = f"{choices['model']} + {choices['attn']}"
    if "head" in choices:
        title += f" ({choices['head']} head)"
    title += f" on {choices['data']}"
    title += f", {trainer.current_epoch} epochs"
    if trainer.is_global_zero:
        print_report(title, rows, footer)
    return best


if __name__ == "__main__":
    main()
