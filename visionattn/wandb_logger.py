"""Lightning's WandbLogger without the ``anonymous`` argument it always passes to ``wandb.init``
(None unless set), which wandb warns about on every run as a deprecated setting."""

from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """:class:`lightning.pytorch.loggers.WandbLogger`, the same arguments but ``anonymous``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
