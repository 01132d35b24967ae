"""Evaluate a checkpoint on its validation split:
``python eval.py ckpt_path=CKPT [output=FILE] [ema=true]``.

``ema=true`` evaluates the moving average of the weights that a run with ``task.ema.decay`` > 0
kept beside them (logged there as ``val_ema/*``), in the trained weights' place; a checkpoint of a
run without it is refused. The model runs uncompiled even where the run had ``task.compile``: a
cold compile costs more than evaluating most validation splits (20-35 s on a CPU) and would land
in the measured step time; the weights are the same either way.

Prints the task's scores and the cost, and writes them as JSON: ``weights`` (``"raw"`` or
``"ema"``); for classification ``acc1``, ``acc5``, ``loss``; for segmentation ``miou``,
``pixel_acc``, ``per_class_iou`` (class name to IoU, null where a class is in neither labels nor
predictions), ``loss`` and the ``inference`` settings; then for both ``throughput``,
``throughput_per_device``, ``step_time``, ``data_time``, ``peak_memory_mb``, ``params``, ``flops``,
``images``, ``precision`` and ``skipped_images`` (unreadable images left out, each named in the
log). Accuracies are fractions, throughput in images/s, times in seconds, memory in MiB, FLOPs per
image. It runs at the precision the checkpoint was trained with unless trainer.precision says.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="pkg://visionattn.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from visionattn.run_record import accept_record, attempt

    run_dir = Path(cfg.paths.output_dir)
    with attempt(run_dir, run_dir / f"{cfg.task_name}.log"):
        evaluate(cfg)
    accept_record(run_dir)


def evaluate(cfg: DictConfig) -> None:
    # Imported here so that a mistyped option fails at once, before torch loads.
    import lightning as L
    from hydra.utils import instantiate

    from visionattn.callbacks import CostMonitor, SegmentationOverlays, SkippedImages
    from visionattn.checkpoint import (
        CheckpointError,
        instantiate_trusted,
        load_checkpoint,
        run_config,
    )
    from visionattn.data import DatasetError
    from visionattn.preflight import check_accelerator, check_eval_size
    from visionattn.report import (
        check_output_path,
        cost_rows,
        display_path,
        percent,
        print_report,
        write_json,
    )
    from visionattn.tasks.task import model_weights

    output = Path(cfg.output or Path(cfg.paths.output_dir) / "eval.json")
    try:
        check_output_path(output, cfg.ckpt_path)
        check_accelerator(cfg.trainer)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        checkpoint = load_checkpoint(cfg.ckpt_path)
        trained = run_config(checkpoint, cfg.ckpt_path)
        weights = model_weights(checkpoint["state_dict"], ema=cfg.ema)
        if cfg.ema and not weights:
            raise CheckpointError(
                f"checkpoint {cfg.ckpt_path} holds no EMA weights: it was trained without "
                "task.ema.decay (ema=true needs a run with task.ema.decay > 0)"
            )
        moved = {key: value for key, value in cfg.data.items() if value is not None}
        check_eval_size(trained, moved.get("image_size"))
        data_config = OmegaConf.to_container(OmegaConf.merge(trained["data"], moved))
        datamodule = instantiate_trusted(data_config, L.LightningDataModule)
        # What the datamodule saved of itself, the class list among it: labels map as in training.
        state = checkpoint.get(type(datamodule).__qualname__)
        if state is not None:
            datamodule.load_state_dict(state)
        # The weights come from the checkpoint: the file the run started from is not needed.
        task_config = {**trained["task"], "model": {**trained["task"]["model"], "pretrained": None}}
        # The weights chosen are loaded into the model itself; no EMA copy, no compile.
        task_config |= {"ema": None, "compile": False}
        inference = {k: v for k, v in cfg.inference.items() if v is not None}
        if inference:
            if "inference" not in task_config:
                raise SystemExit("error: inference.* applies to segmentation checkpoints only")
            task_config["inference"] = {**task_config["inference"], **inference}
        task = instantiate_trusted(task_config, L.LightningModule)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    task.load_state_dict(weights)

    cost, skipped = CostMonitor(), SkippedImages()
    callbacks = [cost, skipped]
    if cfg.overlays:
        if task.data_kind != "segmentation":
            raise SystemExit("error: overlays=N applies to segmentation checkpoints only")
        callbacks.append(SegmentationOverlays(cfg.overlays, output.parent / "overlays"))
    precision = cfg.trainer.precision or trained["trainer"]["precision"]
    trainer = instantiate(
        cfg.trainer,
        precision=precision,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
    )
    try:
        [metrics] = trainer.validate(task, datamodule=datamodule, verbose=False)
    except DatasetError as e:  # data.root moved or incomplete
        raise SystemExit(f"error: {e}") from None

    summary = task.summary(metrics)
    result = {
        "ckpt_path": str(Path(cfg.ckpt_path).absolute()),
        "weights": "ema" if cfg.ema else "raw",
        **summary,
        **cost.val_summary,
        "params": cost.params,
        "flops": cost.flops,
        "precision": str(precision),
        "skipped_images": skipped.total["val"],
    }
    write_json(output, result)
    rows = [
        ("images", f"{result['images']} (validation split)"),
        ("weights", "moving average (EMA)" if cfg.ema else "as trained"),
        *task.summary_rows(summary),
        *cost_rows(cost.val_summary, cost.params, cost.flops),
        *skipped.rows(),
        ("results", display_path(output)),
    ]
    if cfg.overlays:
        rows.append(("overlays", display_path(output.parent / "overlays")))
    print_report(display_path(cfg.ckpt_path), rows)
    if "per_class_iou" in summary:
        per_class = summary["per_class_iou"].items()
        print_report("IoU per class", [(name, percent(iou)) for name, iou in per_class])


if __name__ == "__main__":
    from visionattn.config_errors import run_main
    from visionattn.console import quiet_console

    quiet_console()
    run_main(main, "eval")
