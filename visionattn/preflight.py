"""Checks of a run's settings against the machine, made before any logger, trainer or file of
the run starts, so that a refusal costs nothing and leaves nothing behind."""

import inspect
import re
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from visionattn.data.download import DatasetError

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


def check_missing(cfg: DictConfig) -> None:
    """Refuse a mandatory value (``???``) that is still unset, naming every one of them."""
    missing = _missing_keys(cfg)
    if missing:
        listed = " ".join(f"{key}=..." for key in missing)
        raise ValueError(f"{', '.join(missing)} must be set (??? in the config): pass {listed}")


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            keys.append(path)
        elif isinstance(node[key], DictConfig):
            keys += _missing_keys(node[key], f"{path}.")
    return keys


# The config groups that only one task reads: any other task would train without them.
TASK_GROUPS = {"head": "segmentation"}


def check_groups_used(choices: Mapping[str, str | None], task: str) -> None:
    """Refuse a config group the task never reads (``+head=fcn`` in classification), which would
    otherwise train without it and still name it in the report."""
    for group, owner in TASK_GROUPS.items():
        if choices.get(group) is not None and task != owner:
            raise ValueError(
                f"{group}={choices[group]} is read by task={owner} only, and this run is "
                f"task={task}: drop it, or add task={owner}"
            )


def effective_precision(precision: str | int | None, accelerator: str) -> str | int | None:
    """The precision a run actually trains at: ``16-mixed`` on a CPU is bf16 autocast, as
    Lightning's CPU plugin runs it, so the config and the report say ``bf16-mixed``."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and str(precision) in ("16-mixed", "16"):
        return "bf16-mixed"
    return precision


def built(group: str, node: DictConfig) -> Any:
    """``instantiate(node)``, with a bad value named in one line: the ValueError (or the
    DatasetError) of the class it builds, or the unknown argument, instead of Hydra's
    ``Error in call to target`` wrapped around a traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (ValueError, DatasetError)):
            raise cause from None
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if isinstance(cause, TypeError) and unexpected:
            target = node.get("_target_", group)
            raise ValueError(
                f"{group}.{unexpected.group(1)} is not a setting of {target}: drop it"
            ) from None
        raise


def size_bound_plugin(attn: Mapping | None) -> str | None:
    """The plugin's name where its paper ties it to the one feature size it was built for
    (learned position tables, Linformer's projection); None for any other."""
    name = (attn or {}).get("name")
    if name in (None, "none"):
        return None
    from visionattn.attention import get_attention

    size = inspect.signature(get_attention(name)).parameters.get("feat_size")
    return name if size is not None and size.default is inspect.Parameter.empty else None


def check_eval_size(trained: Mapping, image_size: object) -> None:
    """Refuse to evaluate a size-bound plugin's classifier at another image size than it was
    trained at: it would fail in the middle of validation, on the first batch."""
    plugin = size_bound_plugin(trained["task"].get("attn"))
    size = trained["data"].get("image_size")
    if plugin is None or image_size is None or image_size == size:
        return
    if "inference" in trained["task"]:  # segmentation
        fix = f"inference.mode=slide inference.crop={size}, or data.image_size={size}"
    else:
        fix = f"data.image_size={size}, the training size"
    raise ValueError(
        f"{plugin} is built for one feature size, and this checkpoint was trained at "
        f"data.image_size={size}: it cannot take {image_size}; evaluate with {fix}"
    )
