"""How every figure of cost is measured, in one place, so all plugins are measured the same way.

- parameters: every parameter of the model, trainable or not;
- FLOPs: ``torch.utils.flop_counter`` on one image in eval mode, as 2 x multiply-accumulates of
  matmuls and convolutions (``scaled_dot_product_attention`` and torchvision's deformable
  convolution included); element-wise ops, softmax and normalisation are not counted;
- peak memory of a run, in MiB: on a CUDA device ``torch.cuda.max_memory_allocated`` since the
  last reset, else the process's peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs`` after a collection and ``malloc_trim``, so the runs of one multirun
  process inherit neither each other's peak nor the pages they freed; ``ru_maxrss``, never reset,
  where there is no /proc);
- peak memory of one call (the benchmark's): the most bytes PyTorch's allocator held above what it
  held when the call began, so inputs and weights already allocated are not counted; on CUDA from
  the allocator's own peak, on a CPU from the profiler's allocation events, the same definition;
- latency: the median wall time of repeated calls after warm-up calls, CUDA synchronised.
"""

import contextlib
import ctypes
import gc
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, flop_registry

MIB = 2**20


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    # Counted as the dense conv it generalises: weight (C_out, C_in / groups, kh, kw) applied at
    # every output position; the bilinear sampling is element-wise and, like the rest, not counted.
    out_channels, in_per_group, kh, kw = weight_shape
    batch, _, height, width = out_shape
    return 2 * batch * out_channels * height * width * in_per_group * kh * kw


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape, **kwargs) -> int:
    # q k^T and the weights times v: 2 N M d + 2 N M e per batch and head, as torch counts its
    # CUDA kernels; the softmax is not counted.
    *batch, n, d = query_shape
    m, e = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * n * m * (d + e)


def _custom_flops() -> dict:
    """Formulas for ops torch's counter does not know (some torch releases count no SDPA kernel
    of the CPU's), where they are installed."""
    mapping = {}
    cpu_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if cpu_flash not in flop_registry:
        mapping[cpu_flash] = _cpu_attention_flops
    try:
        import torchvision  # noqa: F401 - registers torch.ops.torchvision
    except ImportError:
        return mapping
    return {**mapping, torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example[:1]``, with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_custom_flops()) as counter:
            model(example[:1])
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a host clock measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator peak, or the process's peak resident set (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # What an earlier run of the process freed must not count: collect it and hand the heap's
    # free pages back to the OS, so the resident set is what is alive now.
    gc.collect()
    _malloc_trim()
    # "5" sets VmHWM to the current resident set (Linux >= 4.0); where /proc is missing or
    # not writable the peak stays the process's own.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _malloc_trim() -> None:
    # glibc only; other C libraries (musl, macOS) have no malloc_trim and keep their pages.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    # ru_maxrss is in KiB on Linux and in bytes on macOS; after fork+exec it can report the
    # parent's peak, which is why /proc comes first.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def peak_call_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes the allocator held at its peak during ``fn()`` above what it held before."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - held
    # PyTorch keeps no peak for CPU tensors; the profiler records every allocation (+bytes) and
    # free (-bytes). Its raw events keep them apart; prof.events() folds them into the ops.
    with _profiling(profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type().name == "CPU"
    ]
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    return peak


@contextlib.contextmanager
def _profiling(**options):
    """The CPU profiler around the measured call. Its C++ side writes lines of its own to stderr
    as it starts and stops (USDT and, without a GPU, an ERROR about the device count) that say
    nothing about the measurement: stderr is closed for the start and the stop only, never for
    the call itself."""
    prof = profile(activities=[ProfilerActivity.CPU], **options)
    with _stderr_closed():
        prof.start()
    try:
        yield prof
    finally:
        with _stderr_closed():
            prof.stop()


@contextlib.contextmanager
def _stderr_closed():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to close
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def attention_kernels(fn: Callable[[], object]) -> list[str]:
    """The ``scaled_dot_product_attention`` kernels ``fn()`` ran (``flash``, ``efficient``,
    ``cudnn``, ``math``), forward and backward, with ``chunked`` for the math kernel run on query
    chunks by :func:`visionattn.attention.ops.attend`: ``math`` alone means the O(N^2)-memory
    fallback."""
    from visionattn.attention.ops import CHUNKED

    with _profiling() as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    chunks = [(e.start_ns(), e.start_ns() + e.duration_ns()) for e in events if e.name() == CHUNKED]
    kernels = set()
    for event in events:
        name = event.name()
        if name.startswith("aten::_scaled_dot_product_") and not name.endswith("_backward"):
            for kernel in ("flash", "efficient", "cudnn", "math"):
                if kernel in name:
                    start = event.start_ns()
                    chunked = kernel == "math" and any(a <= start <= b for a, b in chunks)
                    kernels.add("chunked" if chunked else kernel)
    return sorted(kernels)


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls, in milliseconds."""

    median_ms: float
    repeats: int


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    min_time_s: float = 0.5,
    max_time_s: float = 10.0,
    max_repeats: int = 1000,
) -> Timing:
    """Median of at least ``repeats`` timed calls and at least ``min_time_s`` of them, after
    ``warmup`` untimed ones (lazy initialisation, autotuning, allocator growth). A case slower
    than ``max_time_s`` (a quadratic plugin on a big map, on a CPU) stops at one warm-up call
    and as many timed ones as fit, at least one.

    Hand-written because ``torch.utils.benchmark``'s autorange has no minimum number of repeats:
    a case slower than its run time would be timed once.
    """
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        synchronize(device)
        if time.perf_counter() - start > max_time_s / repeats:
            break
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < repeats or sum(times) < min_time_s):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if sum(times) > max_time_s:
            break
    return Timing(median_ms=statistics.median(times) * 1e3, repeats=len(times))
