"""How much memory a training step will need, known before training: ``memory_limit_mb`` in
train.py's config refuses a model, map and batch that need more than the user allows.

The step is measured, not modelled: forward and backward of a copy of the model at batches of 2
and 4 on the CPU (the allocator's peak, exact there; batch 1 would break BatchNorm on pooled
features), under the autocast dtype of the run's precision, then extrapolated linearly in the
batch. The weights, their gradients and the optimiser's two states per weight (AdamW's) come on
top. A GPU adds its kernels' workspace, a few percent: the figure is a floor, close to the peak.
"""

import contextlib
import copy
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from timm.layers import to_2tuple
from torch import nn

from visionattn.measure import MIB, peak_call_memory

MEASURED_BATCHES = (2, 4)
OPTIMIZER_STATES = 2  # AdamW's two moments; SGD with momentum keeps one


class MemoryLimitError(ValueError):
    """A training step that needs more memory than ``memory_limit_mb`` allows."""


@dataclass(frozen=True)
class StepMemory:
    """``fixed + per_image * batch`` MiB for a training step."""

    fixed_mib: float  # weights, gradients and optimiser state, plus what does not grow with batch
    per_image_mib: float

    def at(self, batch: int) -> float:
        return self.fixed_mib + self.per_image_mib * batch

    def largest_batch(self, limit_mib: float) -> float:
        """The largest batch whose step fits ``limit_mib``; 0 when none does."""
        if self.per_image_mib <= 0:
            return 0 if self.fixed_mib > limit_mib else math.inf
        return max(0, math.floor((limit_mib - self.fixed_mib) / self.per_image_mib))


def _autocast_dtype(precision: str | int | None) -> torch.dtype | None:
    precision = str(precision)
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def step_memory(
    model: nn.Module, image_size: int | Sequence[int], precision: str | int | None = None
) -> StepMemory:
    """The memory of a training step of ``model`` on RGB images of ``image_size``, by batch."""
    model = copy.deepcopy(model).cpu().train()
    height, width = (int(side) for side in to_2tuple(image_size))
    dtype = _autocast_dtype(precision)
    peaks = []
    for batch in MEASURED_BATCHES:
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))

        def step(images: torch.Tensor = images) -> None:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                outputs = model(images)
            # A segmentor returns its main and auxiliary logits: every output gets a gradient.
            outputs = outputs.values() if isinstance(outputs, dict) else [outputs]
            sum(o.float().sum() for o in outputs).backward()
            model.zero_grad(set_to_none=True)

        # The run's random stream stays as it was (dropout, drop-path draw from it), and the
        # profiler's own log lines stay off the console.
        with torch.random.fork_rng(devices=[]), _native_stderr_silenced():
            peaks.append(peak_call_memory(step, torch.device("cpu")) / MIB)
    (small, large), (b_small, b_large) = peaks, MEASURED_BATCHES
    per_image = max(0.0, (large - small) / (b_large - b_small))
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    # The measured peak holds the gradients already; the weights and optimiser state are apart.
    fixed = params * (1 + OPTIMIZER_STATES) + small - per_image * b_small
    return StepMemory(fixed_mib=fixed, per_image_mib=per_image)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: the profiler's C++ logging writes there, not to Python."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_memory_limit(
    model: nn.Module,
    image_size: int | Sequence[int],
    batch_size: int,
    limit_mib: float,
    precision: str | int | None = None,
) -> StepMemory:
    """Raise :class:`MemoryLimitError`, naming the need and the fix, when a training step of
    ``batch_size`` images needs more than ``limit_mib``."""
    if isinstance(limit_mib, bool) or not isinstance(limit_mib, int | float) or limit_mib <= 0:
        raise MemoryLimitError(
            f"memory_limit_mb must be a positive number of MiB, or null for no check; got "
            f"{limit_mib!r}"
        )
    memory = step_memory(model, image_size, precision)
    need = memory.at(batch_size)
    if need <= limit_mib:
        return memory
    fits = memory.largest_batch(limit_mib)
    fix = (
        f"data.batch_size={fits} fits, or lower data.image_size"
        if fits
        else "no batch fits at this size: lower data.image_size"
    )
    raise MemoryLimitError(
        f"a training step at data.batch_size={batch_size} and data.image_size={image_size} needs "
        f"about {need:,.0f} MiB (measured before training), more than memory_limit_mb="
        f"{limit_mib:g}; {fix}, or raise memory_limit_mb"
    )
