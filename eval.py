"""Evaluate a checkpoint on its validation split: ``python eval.py ckpt_path=CKPT [output=FILE]``.

Prints accuracy and cost and writes them as JSON (keys acc1, acc5, loss, throughput,
throughput_per_device, step_time, data_time, peak_memory_mb, params, flops, images, precision):
accuracies are fractions, throughput in images/s, times in seconds, memory in MiB, FLOPs per
image. It runs at the precision the checkpoint was trained with unless trainer.precision says.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    # Imported here so that a mistyped option fails at once, before torch loads.
    from hydra.utils import instantiate

    from visionattn.callbacks import CostMonitor
    from visionattn.checkpoint import (
        CheckpointError,
        instantiate_trusted,
        load_checkpoint,
        run_config,
    )
    from visionattn.report import cost_rows, display_path, percent, print_report, write_json

    try:
        checkpoint = load_checkpoint(cfg.ckpt_path)
        trained = run_config(checkpoint, cfg.ckpt_path)
        data_config = OmegaConf.to_container(OmegaConf.merge(trained["data"], cfg.data))
        datamodule = instantiate_trusted(data_config)
        # The weights come from the checkpoint: the file the run started from is not needed.
        task = instantiate_trusted(
            {**trained["task"], "model": {**trained["task"]["model"], "pretrained": None}}
        )
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    task.load_state_dict(checkpoint["state_dict"])

    cost = CostMonitor()
    precision = cfg.trainer.precision or trained["trainer"]["precision"]
    trainer = instantiate(
        cfg.trainer, precision=precision, logger=False, callbacks=[cost], enable_checkpointing=False
    )
    [metrics] = trainer.validate(task, datamodule=datamodule, verbose=False)

    result = {
        "ckpt_path": str(Path(cfg.ckpt_path).absolute()),
        "acc1": metrics["val/acc1"],
        "acc5": metrics["val/acc5"],
        "loss": metrics["val/loss"],
        **cost.val_summary,
        "params": cost.params,
        "flops": cost.flops,
        "precision": str(precision),
    }
    output = Path(cfg.output or Path(cfg.paths.output_dir) / "eval.json")
    write_json(output, result)
    rows = [
        ("images", f"{result['images']} (validation split)"),
        ("val acc1", percent(result["acc1"])),
        ("val acc5", percent(result["acc5"])),
        *cost_rows(cost.val_summary, cost.params, cost.flops),
        ("results", display_path(output)),
    ]
    print_report(display_path(cfg.ckpt_path), rows)


if __name__ == "__main__":
    main()
