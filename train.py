"""Train a backbone with an attention plugin: ``python train.py [group=option ...] [key=value]``.

Everything of the run lands in its directory, ``outputs/train/<name>`` (``hydra.run.dir``): the
resolved config.yaml, metrics.csv, wandb/, train.log and checkpoints/{best,last}.ckpt, written by
rank 0 alone. Started again under the same name it resumes from its last.ckpt (``resume=auto``).
"""

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="pkg://visionattn.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from visionattn.run_record import attempt

    output_dir = Path(cfg.paths.output_dir)
    with attempt(output_dir, output_dir / f"{cfg.task_name}.log"):
        return train(cfg, output_dir)


def train(cfg: DictConfig, output_dir: Path) -> float | None:
    # Imported here so that a mistyped option fails at once, before torch loads.
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.accelerators import CUDAAccelerator
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from visionattn.callbacks import (
        AverageBatchNormStats,
        CostMonitor,
        Preemption,
        ResumeState,
        SkippedImages,
        StoreConfig,
        saved_wandb_run_id,
        saved_world_size,
    )
    from visionattn.checkpoint import (
        CheckpointError,
        check_resume,
        check_world_size,
        load_checkpoint,
        resume_path,
        run_config,
    )
    from visionattn.checkpoint_io import AtomicCheckpointIO
    from visionattn.data import DatasetError
    from visionattn.memory_limit import MemoryLimitError, check_memory_limit
    from visionattn.preflight import (
        built,
        check_accelerator,
        check_epochs,
        check_groups_used,
        check_missing,
        effective_precision,
    )
    from visionattn.report import cost_rows, display_path, eval_command, print_report
    from visionattn.run_record import accept_record

    # Known from the launcher's environment (Lightning's, srun's, torchrun's) before anything runs.
    rank_zero = rank_zero_only.rank == 0
    if not rank_zero:  # one train.log, rank 0's
        for named in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(named, "handlers", [])[:]:
                if isinstance(handler, logging.FileHandler):
                    named.removeHandler(handler)
                    handler.close()

    checkpoints = output_dir / "checkpoints"
    choices = HydraConfig.get().runtime.choices
    # Everything that can be checked is, before any logger, trainer or file of the run starts.
    try:
        check_missing(cfg)
        check_accelerator(cfg.trainer)
        check_epochs(cfg.trainer)
        check_groups_used(choices, choices["task"])
        # The model's initialisation, the same on every rank; ResumeState seeds each rank's own
        # stream once the ranks exist.
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = built("data", cfg.data)
        datamodule.check()
        if cfg.data.get("num_classes", 0) is None:  # found in the data: the tree, the index
            cfg.data.num_classes = datamodule.num_classes
        cfg.trainer.precision = effective_precision(
            cfg.trainer.get("precision"), cfg.trainer.get("accelerator", "auto")
        )
        task = built("task", cfg.task)
    except (ValueError, DatasetError) as e:
        raise SystemExit(f"error: {e}") from None
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        ckpt_path = cfg.ckpt_path or resume_path(cfg.resume, checkpoints / "last.ckpt")
        checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None
        if checkpoint is not None:
            check_resume(run_config(checkpoint, ckpt_path), config, ckpt_path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None

    logger_args: dict[str, dict[str, Any]] = {}
    if "wandb" in (cfg.logger or {}):
        # wandb's process-wide telemetry follows WANDB_MODE, not the logger's mode: keep them in
        # step, or an offline run still posts telemetry to wandb's server.
        os.environ["WANDB_MODE"] = cfg.logger.wandb.mode
        # wandb's own end-of-run history and summary (30 lines) would repeat the report printed
        # under them; WANDB_QUIET=false brings them back.
        os.environ.setdefault("WANDB_QUIET", "true")
        run_id = saved_wandb_run_id(checkpoint) if checkpoint else None
        if run_id:
            logger_args["wandb"] = {"id": run_id, "resume": "allow"}

    if cfg.get("memory_limit_mb") is not None:
        try:
            check_memory_limit(
                task.model,
                cfg.data.image_size,
                cfg.data.batch_size,
                cfg.memory_limit_mb,
                cfg.trainer.get("precision"),
            )
        except MemoryLimitError as e:
            raise SystemExit(f"error: {e}") from None
    skipped = SkippedImages()
    # callbacks.<name>=null drops one.
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks += [
        StoreConfig(config),
        skipped,
        ResumeState(cfg.seed),
        Preemption(checkpoints, cfg.requeue_signal),
        AverageBatchNormStats(),
    ]
    loggers = [instantiate(c, **logger_args.get(k, {})) for k, c in (cfg.logger or {}).items()]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    if cfg.trainer.get("sync_batchnorm") and not isinstance(trainer.accelerator, CUDAAccelerator):
        raise SystemExit(
            "error: trainer.sync_batchnorm=true needs GPUs (PyTorch's SyncBatchNorm has no CPU "
            "kernel): use trainer=ddp_cpu, or trainer.sync_batchnorm=false"
        )
    if checkpoint is not None:
        try:
            check_world_size(saved_world_size(checkpoint), trainer.world_size, ckpt_path)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
    # Only a run that passed every check leaves its config in the run directory and the loggers.
    if rank_zero:
        accept_record(output_dir)
        OmegaConf.save(config, output_dir / "config.yaml")
    for logger in loggers:
        logger.log_hyperparams(config)
    if checkpoint is not None and rank_zero:
        print(
            f"Resuming from {display_path(ckpt_path)} (epoch {checkpoint['epoch']}, "
            f"step {checkpoint['global_step']})"
        )
    del checkpoint  # Lightning reads it again, as it restores each part
    started = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except DatasetError as e:  # raised by the datamodule's setup, before the first step
        raise SystemExit(f"error: {e}") from None
    except SIGTERMException:
        if rank_zero:
            print(
                f"Stopped by a signal at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}; {display_path(checkpoints / 'last.ckpt')} holds the run. "
                "The same command continues it (resume=auto)."
            )
        raise SystemExit(143) from None  # 128 + SIGTERM, as if the signal had ended it
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score if checkpoint else None
    best = None if best is None else float(best)
    monitor = (checkpoint.monitor if checkpoint else None) or ""
    cost = next((c for c in trainer.callbacks if isinstance(c, CostMonitor)), CostMonitor())
    rows = [
        *task.summary_rows(task.summary(metrics), best, monitor),
        *cost_rows(cost.train_summary, cost.params, cost.flops),
        ("precision", str(trainer.precision)),
        ("wall time", f"{minutes} min {seconds} s (training and validation)"),
        *skipped.rows(),
        ("run dir", display_path(output_dir)),
    ]
    footer = []
    if checkpoint and checkpoint.best_model_path:
        rows.append(("checkpoint", display_path(checkpoint.best_model_path)))
        ema = monitor.startswith("val_ema/")  # best.ckpt is the average's best
        footer = ["Evaluate it with:", f"  {eval_command(checkpoint.best_model_path, ema)}"]
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None and wandb.run.settings.mode == "offline":  # rank 0's run
            footer += [
                "Upload its wandb run with:",
                f"  wandb sync {display_path(wandb.run.settings.sync_dir)}",
            ]
        wandb.finish()
    title = f"{choices['model']} + {choices['attn']}"
    if "head" in choices:
        title += f" ({choices['head']} head)"
    title += f" on {choices['data']}"
    title += f", {trainer.current_epoch} epochs"
    if trainer.is_global_zero:
        print_report(title, rows, footer)
    return best


if __name__ == "__main__":
    from visionattn.config_errors import run_main
    from visionattn.console import quiet_console

    quiet_console()
    run_main(main, "train")
