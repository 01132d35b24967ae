"""How every figure of cost is measured, in one place, so all plugins are measured the same way.

- parameters: every parameter of the model, trainable or not;
- FLOPs: ``torch.utils.flop_counter`` on one image in eval mode, as 2 x multiply-accumulates of
  matmuls and convolutions (``scaled_dot_product_attention`` and torchvision's deformable
  convolution included); element-wise ops, softmax and normalisation are not counted;
- peak memory, in MiB: on a CUDA device ``torch.cuda.max_memory_allocated`` since the last reset,
  else the process's peak resident set (``VmHWM``; ``ru_maxrss`` where there is no /proc).
"""

import resource
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

MIB = 2**20


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    # Counted as the dense conv it generalises: weight (C_out, C_in / groups, kh, kw) applied at
    # every output position; the bilinear sampling is element-wise and, like the rest, not counted.
    out_channels, in_per_group, kh, kw = weight_shape
    batch, _, height, width = out_shape
    return 2 * batch * out_channels * height * width * in_per_group * kh * kw


def _custom_flops() -> dict:
    """Formulas for ops torch's counter does not know, where they are installed."""
    try:
        import torchvision  # noqa: F401 - registers torch.ops.torchvision
    except ImportError:
        return {}
    return {torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops}


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
    """Start a new CUDA peak; a process's peak resident set cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


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
