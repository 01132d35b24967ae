"""Lightning's WandbLogger without the init argument wandb deprecated."""

from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """:class:`lightning.pytorch.loggers.WandbLogger`, less ``anonymous``: Lightning always passes
    ``anonymous`` to ``wandb.init`` (None unless asked), and wandb (0.31 here) warns at every run
    that the setting has no effect. Its other arguments are Lightning's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("anonymous", None)
        super().__init__(*args, **kwargs)
        # Lightning 2.6 keeps wandb.init's arguments here, until the run starts on first use.
        self._wandb_init.pop("anonymous", None)
