"""Checks of a run's settings against the machine, made before any logger, trainer or file of
the run starts, so that a refusal costs nothing and leaves nothing behind."""

from collections.abc import Mapping

import torch

GPU_ACCELERATORS = ("gpu", "cuda")


def check_accelerator(trainer: Mapping, group: str = "trainer") -> None:
    """Refuse a GPU trainer on a machine without CUDA, naming the config that works here."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ValueError(
            f"{group}.accelerator={accelerator} needs a CUDA GPU, and this machine has none: use "
            "trainer=cpu (or trainer=ddp_cpu for several processes), or trainer=default, which "
            "takes a GPU where there is one"
        )


def check_epochs(trainer: Mapping) -> None:
    """The learning-rate schedule is as long as ``max_epochs``: it must be a whole number >= 1."""
    epochs = trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            f"trainer.max_epochs must be a whole number of epochs >= 1 (the learning-rate "
            f"schedule is as long as the run), got {epochs!r}"
        )
