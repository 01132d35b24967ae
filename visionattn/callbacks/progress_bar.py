"""Lightning's rich progress bar, showing only what fits beside it in an 80-column terminal."""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich import get_console

# (shown name, logged keys, the first one logged wins): the training loss of the step in progress,
# and the score the checkpoint keeps the best of. Every other figure is in the final report and
# the logs; the bar's own v_num (the logger's version) says nothing the run directory does not.
SHOWN = (
    ("loss", ("train/loss_step", "train/loss")),
    ("acc1", ("val/acc1",)),
    ("miou", ("val/miou",)),
)


class CompactProgressBar(RichProgressBar):
    """:class:`RichProgressBar` with ``loss`` and ``acc1`` (classification) or ``miou``
    (segmentation), to ``digits`` decimals, instead of every metric marked for the bar, whose
    names wrap into a narrow column of their own on an 80-column terminal."""

    def __init__(self, *args: Any, digits: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.digits = digits

    def configure_columns(self, trainer: L.Trainer | None) -> list:
        columns = super().configure_columns(trainer)
        # Rich makes room on a narrow terminal by wrapping the time column onto a second line
        # before it shrinks the bar (40 wide): the bar gets what the other columns leave (74 with
        # 4-digit batch counts and these metrics), 4 to 40.
        console = self._console or get_console()
        columns[1].bar_width = min(40, max(4, console.width - 74))
        return columns

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        logged = trainer.callback_metrics
        shown = {}
        for name, keys in SHOWN:
            key = next((k for k in keys if k in logged), None)
            if key is not None:
                shown[name] = round(float(logged[key]), self.digits)
        return shown
