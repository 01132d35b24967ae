"""What every task shares: timm's optimiser and schedule stepped per update, the learning rate
logged, a check that the data suits the task, and the summary the entry points print."""

import math

import lightning as L
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2


class Task(L.LightningModule):
    """Base of the LightningModules. Subclasses build ``self.model`` and set:

    ``data_kind``: the ``kind`` of datamodule they train on ("classification" or
    "segmentation"), checked before the first batch.

    The constructor of a subclass takes ``optimizer`` (arguments of
    ``timm.optim.create_optimizer_v2``: ``opt``, ``lr``, ...) and ``scheduler`` (arguments of
    ``timm.scheduler.create_scheduler_v2``: ``sched``, ``warmup_epochs``, ...; its length is the
    trainer's ``max_epochs``, stepped per update) and saves them with its other hyperparameters.
    """

    data_kind: str

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        kind = getattr(datamodule, "kind", None)
        if kind is not None and kind != self.data_kind:
            raise ValueError(
                f"{type(datamodule).__name__} holds {kind} data, and this is the {self.data_kind} "
                f"task: pick a {self.data_kind} dataset (data=...) or task={kind}"
            )

    def log_lr(self, batch_size: int) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=batch_size)

    def configure_optimizers(self) -> dict:
        optimizer = create_optimizer_v2(self.model, **self.hparams.optimizer)
        # Length the schedule by epochs x updates per epoch, not by max_steps, so that stopping a
        # run early (max_steps) and resuming it replays the same learning rates.
        self.trainer.estimated_stepping_batches  # noqa: B018 - loads the train loader to count it
        updates_per_epoch = math.ceil(
            self.trainer.num_training_batches / self.trainer.accumulate_grad_batches
        )
        scheduler, _ = create_scheduler_v2(
            optimizer,
            num_epochs=self.trainer.max_epochs,
            step_on_epochs=False,
            updates_per_epoch=updates_per_epoch,
            **self.hparams.scheduler,
        )
        if scheduler is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped with the number of updates done so far.
        scheduler.step_update(num_updates=self.global_step)

    def summary(self, metrics: dict[str, float]) -> dict:
        """The validation results for eval.py's JSON, from ``trainer.validate``'s metrics."""
        raise NotImplementedError

    def summary_rows(self, summary: dict, best: float | None = None) -> list[tuple[str, str]]:
        """Rows of the printed report for ``summary``; ``best`` is the checkpoint's best score."""
        raise NotImplementedError
