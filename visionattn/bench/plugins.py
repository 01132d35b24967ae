"""Plugins alone: each plugin's cost on feature maps of a grid of sizes, measured one way for all.

A case is one plugin on a ``(batch, C, H, W)`` map, built with the knobs of its
``configs/attn/<name>.yaml`` (conv plugins as a ``C -> C`` stride-1 conv). It records parameters,
FLOPs and MACs of one image, the forward latency (eval mode, no autograd), the forward+backward
latency (train mode, gradients of the input and the weights), the peak memory of each above the
input and weights, and which ``scaled_dot_product_attention`` kernel ran. A plugin that cannot
take a size keeps its row, with the reason in ``note`` (its own error, naming the sizes it takes).
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from visionattn.attention import get_attention
from visionattn.bench.configs import plugin_settings
from visionattn.measure import (
    MIB,
    attention_kernels,
    count_flops,
    count_parameters,
    peak_call_memory,
    time_call,
)


@dataclass(frozen=True)
class Repeats:
    """How each latency is taken: ``warmup`` untimed calls, then the median of at least
    ``repeats`` calls lasting at least ``min_time_s`` in all."""

    warmup: int = 2
    repeats: int = 5
    min_time_s: float = 0.3

    def time(self, fn: Callable[[], object], device: torch.device, **overrides) -> float:
        """Median milliseconds of ``fn()``."""
        settings = {**vars(self), **overrides}
        return time_call(fn, device, **settings).median_ms


def build_plugin(name: str, channels: int, height: int, width: int, **knobs) -> nn.Module:
    """Plugin ``name`` as ``attn=<name>`` builds it, for a ``channels x height x width`` map."""
    cls = get_attention(name)
    settings = {**plugin_settings(name), **knobs}
    if "feat_size" in inspect.signature(cls).parameters:
        settings["feat_size"] = (height, width)
    if cls.kind == "conv":
        settings.update(out_channels=channels, stride=1)
    return cls(channels, **settings)


def forward_call(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Inference: eval mode, no autograd graph kept."""

    def forward() -> None:
        module.eval()
        with torch.no_grad():
            module(x)

    return forward


def train_call(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """A training step's share: forward in train mode and backward to the input and the weights.
    The gradients are freed at the end, as ``optimizer.zero_grad()`` does, so every call
    allocates its own and frees only what it allocated (a profiler cannot size a free of memory
    allocated before it started)."""
    x = x.detach().requires_grad_()

    def forward_backward() -> None:
        module.train()
        module(x).float().sum().backward()
        module.zero_grad(set_to_none=True)
        x.grad = None

    return forward_backward


def measure_module(
    module: nn.Module, x: torch.Tensor, device: torch.device, repeats: Repeats
) -> dict:
    """The figures of one case; ``module`` and ``x`` already on ``device``. A step the module
    cannot take (BAM's BatchNorm on pooled features in training at batch 1, memory running
    out) ends the row there, with the error in ``note``; the figures before it stay."""
    forward, train = forward_call(module, x), train_call(module, x)
    figures = {"params": count_parameters(module)}
    measures = {
        "gflops": lambda: count_flops(module, x) / 1e9,
        "gmacs": lambda: figures["gflops"] / 2,
        "forward_ms": lambda: repeats.time(forward, device),
        "forward_peak_mib": lambda: peak_call_memory(forward, device) / MIB,
        "train_ms": lambda: repeats.time(train, device),
        "train_peak_mib": lambda: peak_call_memory(train, device) / MIB,
        "kernel": lambda: "+".join(attention_kernels(train)) or "-",
    }
    for key, measure in measures.items():
        try:
            figures[key] = measure()
        except (ValueError, RuntimeError) as err:
            return {**figures, "note": f"{key}: {str(err).splitlines()[0]}"}
    return {**figures, "note": ""}


def measure_plugin(
    name: str,
    batch: int,
    channels: int,
    size: int,
    device: torch.device,
    repeats: Repeats,
    **knobs,
) -> dict:
    """One row of the plugin table: ``name`` on a ``batch x channels x size x size`` map."""
    row = {
        "plugin": name,
        "kind": get_attention(name).kind,
        "batch": batch,
        "channels": channels,
        "size": size,
        "positions": size * size,
    }
    try:
        module = build_plugin(name, channels, size, size, **knobs).to(device)
    except ValueError as err:  # a size the plugin cannot take, in its own words
        return {**row, "note": str(err)}
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, device=device)
    return {**row, **measure_module(module, x, device, repeats)}
