"""Lightning's rich progress bar with a few short metrics that fit an 80-column terminal.

Lightning's bar shows every logged metric under its full name (``train/loss_step``,
``val/acc5``, ``v_num``); in 80 columns they wrap into a narrow column of fragments. This one
shows the training loss and the task's validation score; the rest are in the final report and
the logs.
"""

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar

# Logged name -> shown name, in the order shown; what a run has not logged is left out.
SHOWN = {
    "train/loss_step": "loss",
    "val/acc1": "acc1",
    "val/miou": "miou",
}


class CompactProgressBar(RichProgressBar):
    """:class:`~lightning.pytorch.callbacks.RichProgressBar` showing ``loss`` and ``acc1`` or
    ``miou``, rounded to three digits."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, str]:
        logged = trainer.callback_metrics
        return {
            shown: f"{float(logged[name]):.3f}" for name, shown in SHOWN.items() if name in logged
        }
