"""What every task shares: timm's optimiser and schedule stepped per update, the learning rate
logged, a check that the data suits the task, the weight EMA validated beside the trained weights,
channels_last and torch.compile, and the summary the entry points print."""

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from visionattn.data.datamodule import no_full_batch
from visionattn.report import percent

EMA_PREFIX = "model_ema.module."


class Task(L.LightningModule):
    """Base of the LightningModules. Subclasses build ``self.model``, then call
    :meth:`finish_model`, and set:

    ``data_kind``: the ``kind`` of datamodule they train on ("classification" or
    "segmentation"), checked before the first batch.

    ``report_scores``: the keys of :meth:`summary` that the printed report shows, as percentages,
    with their names there.

    They validate in :meth:`validate_model`, once for each of :meth:`validated_models`, and keep the
    metric objects of each apart.

    The constructor of a subclass takes ``optimizer`` (arguments of
    ``timm.optim.create_optimizer_v2``: ``opt``, ``lr``, ...) and ``scheduler`` (arguments of
    ``timm.scheduler.create_scheduler_v2``: ``sched``, ``warmup_epochs``, ...; its length is the
    trainer's ``max_epochs``, stepped per update) and saves them with its other hyperparameters;
    and ``ema``, ``channels_last`` and ``compile`` for :meth:`finish_model`.
    """

    data_kind: str
    report_scores: ClassVar[dict[str, str]]

    def finish_model(
        self, ema: dict | None = None, channels_last: bool = False, compile: bool = False
    ) -> None:
        """Set up ``self.model`` once a subclass has built it.

        Args:
            ema: arguments of ``timm.utils.ModelEmaV3`` (``decay``, ``use_warmup``, ...); off where
                ``decay`` is 0 or it is None. The average is ``self.model_ema``, a submodule, so
                it is saved in the checkpoint and restored on resume with the rest.
            channels_last: weights (EMA included) and images in NHWC.
            compile: ``nn.Module.compile`` of ``self.model`` in place, so that the state-dict keys
                are those of an uncompiled run.
        """
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        ema = ema or {}
        self.model_ema: ModelEmaV3 | None = None
        if ema.get("decay", 0.0) > 0:
            # A copy of the model as it is now, so before compile: validating the average needs
            # no second compile. ModelEmaV3 leaves requires_grad on; off, DDP neither syncs nor
            # waits for gradients of the average. Its eval() is undone: Lightning's loops set the
            # modes (eval to validate, the only time the average runs) and warn of modules left
            # in eval mode at the start of training.
            self.model_ema = ModelEmaV3(self.model, **ema).requires_grad_(False).train()
        if compile:
            self.model.compile()
        # Lightning's mean of logged values averages the ranks' image counts as integers under
        # DDP, which is off when ranks validate different numbers of images; MeanMetric sums both.
        self.val_loss = nn.ModuleDict({prefix: MeanMetric() for prefix in self.validated_models()})

    def validated_models(self) -> dict[str, nn.Module]:
        """The weights validation scores, by the prefix of their logged keys: ``val`` the trained
        ones, ``val_ema`` their moving average when there is one."""
        models = {"val": self.model}
        if self.model_ema is not None:
            models["val_ema"] = self.model_ema.module
        return models

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        kind = getattr(datamodule, "kind", None)
        if kind is not None and kind != self.data_kind:
            raise ValueError(
                f"{type(datamodule).__name__} holds {kind} data, and this is the {self.data_kind} "
                f"task: pick a {self.data_kind} dataset (data=...) or task={kind}"
            )
        # Lightning notes that our on_after_batch_transfer, not the datamodule's, is used: that
        # is the intent. (Should a datamodule define one too, its warning says ours is not used.)
        warnings.filterwarnings(
            "ignore", "You have overridden `on_after_batch_transfer` in `LightningModule` but"
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return batch

    def log_lr(self, batch_size: int) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=batch_size)

    def configure_optimizers(self) -> dict:
        optimizer = create_optimizer_v2(self.model, **self.hparams.optimizer)
        # Length the schedule by epochs x updates per epoch, not by max_steps, so that stopping a
        # run early (max_steps) and resuming it replays the same learning rates.
        self.trainer.estimated_stepping_batches  # noqa: B018 - loads the train loader to count it
        if self.trainer.num_training_batches == 0:
            raise no_full_batch(getattr(self.trainer.train_dataloader, "batch_size", None))
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

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.model_ema is not None:
            # global_step counts this update only after the hook; timm's train.py counts it
            # (its first update, step 1, copies the weights).
            self.model_ema.update(self.model, step=self.global_step + 1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run resumed with task.ema switched on or off since its checkpoint: as in timm's
        # train.py, an average the checkpoint lacks starts from its weights; one not kept is
        # dropped.
        state = checkpoint["state_dict"]
        saved = [key for key in state if key.startswith("model_ema.")]
        if self.model_ema is None:
            for key in saved:
                del state[key]
        elif not saved:
            for key in [k for k in state if k.startswith("model.")]:
                state[EMA_PREFIX + key.removeprefix("model.")] = state[key]

    def validation_step(self, batch: dict, batch_idx: int) -> Any:
        """:meth:`validate_model` for each of :meth:`validated_models`; the trained one's output."""
        outputs = {
            prefix: self.validate_model(model, batch, prefix)
            for prefix, model in self.validated_models().items()
        }
        return outputs["val"]

    def log_val_loss(self, prefix: str, loss: torch.Tensor, batch_size: int) -> None:
        """``{prefix}/loss``: the mean over the validation images of all devices."""
        self.val_loss[prefix].update(loss, weight=batch_size)
        self.log(f"{prefix}/loss", self.val_loss[prefix], prog_bar=prefix == "val")

    def validate_model(self, model: nn.Module, batch: dict, prefix: str) -> Any:
        """Score ``model`` on ``batch`` into the metrics of ``prefix`` and log them as
        ``{prefix}/...``, in the progress bar for ``val`` only."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, float]) -> dict:
        """The validation results for eval.py's JSON, from ``trainer.validate``'s metrics; with
        an EMA, its results under ``ema``."""
        raise NotImplementedError

    def summary_rows(
        self, summary: dict, best: float | None = None, monitor: str = ""
    ) -> list[tuple[str, str]]:
        """Rows of the printed report for ``summary``: the validation scores, then the EMA's.
        ``best``, the checkpoint's best value of the metric ``monitor`` (``val/acc1``, say),
        goes beside that score, or on a row of its own where the report shows no such score."""
        scored = {"val": ("", summary)}
        if "ema" in summary:
            scored["val_ema"] = (" (EMA)", summary["ema"])
        rows = []
        for prefix, (suffix, scores) in scored.items():
            for key, name in self.report_scores.items():
                value = percent(scores[key])
                if best is not None and monitor == f"{prefix}/{key}":
                    value += f" last epoch, {percent(best)} best"
                    best = None
                rows.append((f"val {name}{suffix}", value))
        if best is not None:
            rows.append((f"best {monitor}", f"{best:.4g}"))
        return rows


def model_weights(state_dict: Mapping[str, torch.Tensor], ema: bool = False) -> dict:
    """A task's ``state_dict`` for the same task built without an EMA: the trained weights, or
    with ``ema`` the average's in their place. Empty when ``ema`` and the task kept no average."""
    if ema and not any(key.startswith(EMA_PREFIX) for key in state_dict):
        return {}
    weights = {k: v for k, v in state_dict.items() if not k.startswith(("model.", "model_ema."))}
    source = EMA_PREFIX if ema else "model."
    for key, value in state_dict.items():
        if key.startswith(source):
            weights["model." + key.removeprefix(source)] = value
    return weights
