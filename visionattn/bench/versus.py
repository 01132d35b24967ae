"""Side by side in one run: our models and plugins against timm's and torchvision's builds of the
same architectures, and fused attention against the explicit ``softmax(Q K^T) V`` it replaces.

The two sides of a ratio are timed in alternation, a few calls each per round over several
rounds, and each side's figure is the median of its rounds: a CPU's clock and a GPU's boost drift
over a run, and alternating makes the drift fall on both sides alike.
"""

import contextlib
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from visionattn.attention import ops
from visionattn.bench.fresh import resident_growth_mib
from visionattn.bench.models import inference_step, train_step
from visionattn.bench.peers import MODEL_PEERS, PLUGIN_PEERS
from visionattn.bench.plugins import Repeats, build_plugin, forward_call, train_call
from visionattn.measure import MIB, count_flops, count_parameters, peak_call_memory


def alternating(
    calls: dict[str, Callable[[], object]], device: torch.device, repeats: Repeats, rounds: int
) -> dict[str, float]:
    """Median milliseconds of each call, the calls timed in turn ``rounds`` times."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds):
        for name, fn in calls.items():
            warmup = repeats.warmup if round_ == 0 else 1
            times[name].append(repeats.time(fn, device, warmup=warmup))
    return {name: statistics.median(t) for name, t in times.items()}


def model_peers(
    batch: int, image_size: int, device: torch.device, repeats: Repeats, rounds: int
) -> list[dict]:
    """Our resnet50, mobilenetv2_100 and SE-ResNet-50 against timm's and torchvision's."""
    rows = []
    for peer in MODEL_PEERS.values():
        builds = {"visionattn": peer.ours, **peer.others}
        models = {library: build(1000).to(device) for library, build in builds.items()}
        train = alternating(
            {k: train_step(m, batch, image_size, device) for k, m in models.items()},
            device,
            repeats,
            rounds,
        )
        infer = alternating(
            {k: inference_step(m, batch, image_size, device) for k, m in models.items()},
            device,
            repeats,
            rounds,
        )
        for library, model in models.items():
            rows.append(
                {
                    "architecture": peer.name,
                    "library": library,
                    "params": count_parameters(model),
                    "train_img_s": batch / train[library] * 1e3,
                    "infer_img_s": batch / infer[library] * 1e3,
                    # ours over theirs: above 1 where ours is faster
                    "train_ratio": train[library] / train["visionattn"],
                    "infer_ratio": infer[library] / infer["visionattn"],
                }
            )
        del models
    return rows


def plugin_peers(
    batch: int, channels: int, size: int, device: torch.device, repeats: Repeats, rounds: int
) -> list[dict]:
    """Our se, eca, cbam, gc, nonlocal, sk, coordatt and halo against timm's modules."""
    rows = []
    x = torch.randn(batch, channels, size, size, device=device)
    for peer in PLUGIN_PEERS.values():
        modules = {
            "visionattn": peer.ours(channels, (size, size)).to(device),
            "timm": peer.theirs(channels, (size, size)).to(device),
        }
        forward = alternating(
            {k: forward_call(m, x) for k, m in modules.items()}, device, repeats, rounds
        )
        train = alternating(
            {k: train_call(m, x) for k, m in modules.items()}, device, repeats, rounds
        )
        for library, module in modules.items():
            rows.append(
                {
                    "plugin": peer.name,
                    "library": library if library == "visionattn" else peer.source,
                    "shape": f"{batch}x{channels}x{size}x{size}",
                    "params": count_parameters(module),
                    "forward_ms": forward[library],
                    "train_ms": train[library],
                    # ours over timm's latency: at most 1.05 is the target
                    "train_ratio": train["visionattn"] / train["timm"],
                    "train_peak_mib": peak_call_memory(train_call(module, x), device) / MIB,
                    "note": peer.note if library != "visionattn" else "",
                }
            )
    return rows


def explicit_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` written out: the N x M weights are made and kept."""
    logits = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if bias is not None and bias.dtype == torch.bool:
        logits = logits.masked_fill(~bias, float("-inf"))
    elif bias is not None:
        logits = logits + bias
    return F.softmax(logits, dim=-1) @ v


@contextlib.contextmanager
def explicit_attention() -> Iterator[None]:
    """Plugins built and run inside compute their attention explicitly instead of through the
    fused kernel: the same block, the same weights, only the kernel differs."""
    fused = ops.attend
    ops.attend = explicit_attend
    try:
        yield
    finally:
        ops.attend = fused


def fused_against_explicit(
    name: str,
    batch: int,
    channels: int,
    size: int,
    device: torch.device,
    repeats: Repeats,
    rounds: int,
    **knobs,
) -> dict:
    """Forward+backward of plugin ``name`` through the fused kernel and written out."""
    module = build_plugin(name, channels, size, size, **knobs).to(device)
    x = torch.randn(batch, channels, size, size, device=device)
    fused = train_call(module, x)

    def explicit() -> None:
        with explicit_attention():
            fused()

    train = alternating({"fused": fused, "explicit": explicit}, device, repeats, rounds)
    # The operating system's count too, on a CPU (on a GPU the tensors are not resident memory).
    resident = (
        {
            f"{side}_train_rss_mib": resident_growth_mib(
                name, batch, channels, size, explicit=side == "explicit", **knobs
            )
            for side in ("fused", "explicit")
        }
        if device.type == "cpu" and Path("/proc/self/status").exists()
        else {}
    )
    return {
        "plugin": name,
        "shape": f"{batch}x{channels}x{size}x{size}",
        "settings": ", ".join(f"{k}={v}" for k, v in knobs.items()),
        "gflops": count_flops(module, x) / 1e9,
        "fused_train_ms": train["fused"],
        "explicit_train_ms": train["explicit"],
        "fused_train_peak_mib": peak_call_memory(fused, device) / MIB,
        "explicit_train_peak_mib": peak_call_memory(explicit, device) / MIB,
        **resident,
    }
