"""Reading checkpoints that may come from anywhere: tensors and plain data only, no code; and
which checkpoint a run resumes from.

Lightning checkpoints written by ``train.py`` load with ``weights_only=True``; the run's config
rides along (:class:`visionattn.callbacks.StoreConfig`), and only visionattn's own classes may be
built from it, so a checkpoint cannot name a function to call.
"""

import inspect
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra._internal.utils import _locate
from hydra.utils import instantiate

from visionattn.callbacks.store_config import CONFIG_KEY
from visionattn.unpickling import refusal_reason

TRUSTED_PREFIX = "visionattn."


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, or not one of ours; the message names the path."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint to the CPU with ``weights_only=True``, tensors memory-mapped."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.relative_to(path) for p in path.rglob("*.ckpt"))
        listing = (
            f"the checkpoints in it: {', '.join(map(str, found[:10]))}"
            + (f" and {len(found) - 10} more" if len(found) > 10 else "")
            if found
            else "it holds no .ckpt file"
        )
        raise CheckpointError(f"checkpoint {path} is a folder, not a file; {listing}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch.save zip archive")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        refused = refusal_reason(e)
        if refused:
            raise CheckpointError(f"refusing checkpoint {path}: {refused}") from e
        if isinstance(e, pickle.UnpicklingError):  # torch's message would advise the unsafe load
            reason = "not a file of tensors and plain data that torch.save wrote"
        else:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from e


def run_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The resolved config of the run that wrote ``checkpoint``."""
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"checkpoint {path} has no run config: it was not written by train.py"
        )
    return checkpoint[CONFIG_KEY]


def _targets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every ``_target_`` in ``node`` with the dotted key of the node that holds it."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, str(node["_target_"])
        for key, value in node.items():
            yield from _targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _targets(value, f"{where}[{index}]")


def trusted_class(target: str, base: type) -> type:
    """The class ``target`` names, where it is one of visionattn's own subclasses of ``base``.

    The name alone proves nothing: Hydra's lookup follows attributes, so
    ``visionattn.report.os.system`` resolves to ``posix.system``. What is built is the object the
    name resolves to, so that object is checked. Looking it up imports only modules named
    ``visionattn.*`` (the lookup imports a dotted prefix of the name where an attribute is
    missing), which is why the prefix is checked first.
    """
    refused = f"refusing to build {target!r} named in a checkpoint"
    if not target.startswith(TRUSTED_PREFIX):
        raise CheckpointError(
            f"{refused}: only {TRUSTED_PREFIX}* classes are built from checkpoints"
        )
    try:
        obj = _locate(target)
    except (ImportError, ValueError):
        raise CheckpointError(f"{refused}: no such class in visionattn") from None
    if not (
        inspect.isclass(obj) and obj.__module__.startswith(TRUSTED_PREFIX) and issubclass(obj, base)
    ):
        what = f"{obj.__module__}.{obj.__qualname__}" if hasattr(obj, "__qualname__") else repr(obj)
        raise CheckpointError(f"{refused}: it is {what}, not a {base.__name__} class of visionattn")
    return obj


def instantiate_trusted(config: dict[str, Any], base: type) -> Any:
    """``hydra.utils.instantiate`` for a config read from a checkpoint: its ``_target_`` must be
    a class of visionattn's that subclasses ``base`` (:func:`trusted_class`), and nothing inside
    it may name another (the run configs have none), so no other object is built."""
    targets = list(_targets(config))
    nested = [(where, target) for where, target in targets if where]
    if nested:
        where, target = nested[0]
        raise CheckpointError(
            f"refusing to build {target!r} named in a checkpoint at {where}: a run config "
            "names a class only at its top"
        )
    if not targets:
        raise CheckpointError(f"the checkpoint's config names no {base.__name__} to build")
    trusted_class(targets[0][1], base)
    return instantiate(config)


def resume_path(resume: str | bool, last: Path) -> Path | None:
    """The checkpoint to continue from under ``resume``, or None to start afresh."""
    if resume not in ("auto", False):
        raise CheckpointError(f"resume={resume} is not an option: resume=auto or resume=false")
    if not last.exists():
        return None
    if resume == "auto":
        return last
    raise CheckpointError(
        f"{last.parent.parent} already holds a run ({last}): resume=auto continues it, "
        "another name=... starts a new one"
    )


# What a resumed run may change: where the data is and how it is loaded, how fast the model runs,
# and the weights a run started from (the checkpoint's replace them). Everything else of data,
# task, model, plugin, head, optimiser and schedule is what the run is, and so are these of the
# trainer: they set the epoch's batches and the schedule's length.
RUNTIME_KEYS = {
    "data": {
        "root",
        "download",
        "num_workers",
        "pin_memory",
        "persistent_workers",
        "prefetch_factor",
        "val_batch_size",
    },
    "model": {"pretrained"},
    # task's model, attn, head, optimizer and scheduler are the groups above, under their names
    "task": {
        "model",
        "attn",
        "head",
        "optimizer",
        "scheduler",
        "num_classes",
        "compile",
        "channels_last",
        "inference",
    },
}
GROUPS = ("data", "model", "attn", "head", "optim", "scheduler", "task")
TRAINER_KEYS = (
    "max_epochs",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "limit_train_batches",
    "precision",
)
UNSET = "<unset>"


def _flat(node: Any, where: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {where: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{where}.{key}"))
    return flat


def _what_the_run_is(config: dict[str, Any]) -> dict[str, Any]:
    """``config``'s settings that a resumed run must keep, as dotted keys."""
    kept: dict[str, Any] = {"seed": config.get("seed"), "monitor": config.get("monitor")}
    for group in GROUPS:
        part = config.get(group)
        if isinstance(part, dict):
            part = {k: v for k, v in part.items() if k not in RUNTIME_KEYS.get(group, ())}
        kept.update(_flat(part, group))
    trainer = config.get("trainer") or {}
    kept.update({f"trainer.{key}": trainer.get(key) for key in TRAINER_KEYS})
    return kept


def check_resume(saved: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """A resumed run goes on as the saved run would have: the same model, data, batches and
    schedule. Another batch size, epoch count or plugin would restore fine and then train on the
    wrong samples at the wrong learning rates, or fail deep inside Lightning's restore, so any
    change of them is refused here, naming the keys."""
    before, now = _what_the_run_is(saved), _what_the_run_is(config)
    changed = [key for key in {**before, **now} if before.get(key, UNSET) != now.get(key, UNSET)]
    if not changed:
        return
    # A group under another name (attn=se, now eca) differs in most of its keys: name it alone.
    renamed = {key.split(".")[0] for key in changed if key.count(".") == 1 and key[-5:] == ".name"}
    described = []
    for key in changed:
        group = key.split(".")[0]
        if group in renamed and key != f"{group}.name":
            continue
        shown = group if group in renamed else key
        described.append(f"{shown}={before.get(key, UNSET)} (now {now.get(key, UNSET)})")
    more = f" and {len(described) - 5} more" if len(described) > 5 else ""
    raise CheckpointError(
        f"{path} was trained with {', '.join(described[:5])}{more}: a resumed run goes on as it "
        "began, so pass the same values, or start a new run (another name=...) from its weights "
        f"with model.pretrained={path}"
    )


def check_world_size(saved: int | None, now: int, path: Path) -> None:
    """Each process trains on its share of every epoch's order: on another number of them the
    resumed epoch would repeat some samples and skip others, and the batch grow or shrink."""
    if saved is not None and saved != now:
        raise CheckpointError(
            f"{path} was trained on {saved} process{'es' * (saved > 1)} and this run has {now} "
            "(trainer.devices x trainer.num_nodes): resume it on as many, or start a new run "
            f"(another name=...) from its weights with model.pretrained={path}"
        )
