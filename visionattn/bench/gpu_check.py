"""``python -m visionattn.bench gpu-check --out DIR``: the checks only a GPU can answer, in one
short run (under 8 minutes on one H100 at the defaults).

1. Every plugin forward+backward under fp16 and under bf16 autocast on a segmentation-size map
   (2 x 512 x 96 x 96: a 768 px crop at output stride 8): finite output and gradients, the
   attention kernel that ran, the allocator's peak.
2. The CCNet paper's memory pair at 1 x 512 x 97 x 97, fp32: RCCA (R = 2) against the explicit
   non-local block over all positions (the paper: 1/11), with ISSA (the other sparse
   factorisation, 8 x 8 blocks) and the fused non-local beside them.
3. 50 training steps of resnet50, bf16 autocast, channels_last, SGD, on one fixed batch: ours
   against timm's, images a second and peak memory; both losses must fall.

Writes ``plugins.csv``, ``pair.csv``, ``training.csv`` and ``report.md`` in DIR, and exits 1 when
a check fails (a non-finite value, an error, a loss that did not fall). ``--device cpu`` with small
sizes runs the same code on a CPU (the tests do).
"""

import argparse
import datetime
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from visionattn.attention import list_attentions
from visionattn.bench.plugins import build_plugin
from visionattn.bench.tables import machine, markdown_table, write_csv
from visionattn.bench.versus import explicit_attention
from visionattn.measure import MIB, attention_kernels, peak_call_memory, time_call

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m visionattn.bench gpu-check",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/gpu-check/<time>")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument(
        "--map", nargs=4, type=int, default=[2, 512, 96, 96], metavar=("B", "C", "H", "W")
    )
    parser.add_argument("--pair-size", type=int, default=97, help="side of the 512-channel map")
    parser.add_argument("--pair-channels", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50, help="training steps of each resnet50")
    parser.add_argument("--model-batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--attn", nargs="+", default=None, help="plugins (default: all)")
    return parser.parse_args(argv)


def _finite(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def _median_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Three timed calls after the caller's warm-up: the check has minutes for 58 cases."""
    return time_call(fn, device, warmup=0, repeats=3, min_time_s=0).median_ms


def check_plugin(name: str, dtype: str, shape: list[int], device: torch.device) -> dict:
    """One plugin, one autocast dtype: forward+backward on a ``shape`` map."""
    batch, channels, height, width = shape
    row = {"plugin": name, "dtype": dtype, "shape": "x".join(map(str, shape))}
    try:
        module = build_plugin(name, channels, height, width).to(device).train()
    except ValueError as err:  # a map the plugin cannot take, in its own words
        return {**row, "ok": False, "note": str(err).splitlines()[0]}
    torch.manual_seed(0)
    x = torch.randn(batch, channels, height, width, device=device, requires_grad=True)
    outputs: dict[str, torch.Tensor] = {}

    def step() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=DTYPES[dtype]):
            out = module(x)
        out.float().sum().backward()
        outputs["out"] = out.detach()

    try:
        step()  # warm-up: lazy initialisation, kernel selection
        kernels = attention_kernels(step)
        peak = peak_call_memory(step, device) / MIB
        ms = _median_ms(step, device)
    except (RuntimeError, ValueError) as err:
        return {**row, "ok": False, "note": str(err).splitlines()[0]}
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    finite = _finite(outputs["out"], x.grad, *grads)
    return {
        **row,
        "ok": finite,
        "out_dtype": str(outputs["out"].dtype).removeprefix("torch."),
        "kernel": "+".join(kernels) or "-",
        "train_ms": ms,
        "train_peak_mib": peak,
        "note": "" if finite else "non-finite output or gradient",
    }


def memory_pair(size: int, channels: int, device: torch.device) -> list[dict]:
    """The CCNet paper's comparison, forward+backward in fp32: allocator peak of each side."""
    rows = []
    x = torch.randn(1, channels, size, size, device=device, requires_grad=True)
    for label, name, knobs, explicit in (
        ("ccnet (RCCA, R=2)", "ccnet", {}, False),
        ("nonlocal, all positions, explicit", "nonlocal", {"sub_sample": False}, True),
        ("nonlocal, all positions, fused", "nonlocal", {"sub_sample": False}, False),
        ("issa (ISA, 8x8 blocks)", "issa", {}, False),
    ):
        module = build_plugin(name, channels, size, size, **knobs).to(device).train()

        def step(module: nn.Module = module) -> None:
            x.grad = None
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()

        def run(step: Callable[[], None] = step, explicit: bool = explicit) -> None:
            if explicit:
                with explicit_attention():
                    step()
            else:
                step()

        run()
        rows.append(
            {
                "side": label,
                "shape": f"1x{channels}x{size}x{size}",
                "train_peak_mib": peak_call_memory(run, device) / MIB,
                "train_ms": _median_ms(run, device),
            }
        )
    reference = rows[1]["train_peak_mib"]
    for row in rows:
        row["peak_over_explicit_nonlocal"] = row["train_peak_mib"] / reference
    return rows


def _resnet50s() -> dict[str, Callable[[], nn.Module]]:
    import timm

    from visionattn.models import create_model

    return {
        "visionattn": lambda: create_model("resnet50", attn=None, num_classes=1000),
        "timm": lambda: timm.create_model("resnet50", num_classes=1000),
    }


def training_steps(steps: int, batch: int, image_size: int, device: torch.device) -> list[dict]:
    """``steps`` SGD steps of each resnet50 on one fixed batch, bf16 autocast, channels_last."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator)
    images = images.to(device, memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    rows = []
    for library, build in _resnet50s().items():
        torch.manual_seed(0)
        model = build().to(device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses, times = [], []
        for _ in range(steps):
            start = time.perf_counter()
            losses.append(_one_step(model, optimizer, images, labels).item())  # synchronises
            times.append(time.perf_counter() - start)
        warm = times[len(times) // 5 :] or times  # the first fifth: cuDNN's autotuning
        step_ms = statistics.median(warm) * 1e3
        rows.append(
            {
                "library": library,
                "steps": steps,
                "batch": batch,
                "image_size": image_size,
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "loss_fell": math.isfinite(losses[-1]) and losses[-1] < losses[0],
                "step_ms": step_ms,
                "img_s": batch / step_ms * 1e3,
            }
        )
        rows[-1]["train_peak_mib"] = (
            peak_call_memory(
                lambda model=model, optimizer=optimizer: _one_step(
                    model, optimizer, images, labels
                ),
                device,
            )
            / MIB
        )
    rows[0]["img_s_over_timm"] = rows[0]["img_s"] / rows[1]["img_s"]
    return rows


def _one_step(model, optimizer, images, labels) -> torch.Tensor:
    """One SGD step under bf16 autocast; the loss, detached."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu-check: no CUDA device here; run it on a GPU machine, or pass --device cpu")
    names = [n for n in (args.attn or list_attentions()) if n != "none"]
    out = args.out or Path("outputs/gpu-check") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    plugins = []
    for name in names:
        for dtype in DTYPES:
            plugins.append(check_plugin(name, dtype, args.map, device))
            row = plugins[-1]
            print(f"{name} {dtype}: {'ok' if row['ok'] else 'FAILED ' + row['note']}", flush=True)
    pair = memory_pair(args.pair_size, args.pair_channels, device)
    for row in pair[0], pair[3]:
        print(f"{row['side']} / explicit non-local peak: {row['peak_over_explicit_nonlocal']:.3f}")
    training = training_steps(args.steps, args.model_batch, args.image_size, device)
    print(f"resnet50 bf16 channels_last, ours / timm's img/s: {training[0]['img_s_over_timm']:.3f}")
    elapsed = time.perf_counter() - started

    write_csv(plugins, out / "plugins.csv")
    write_csv(pair, out / "pair.csv")
    write_csv(training, out / "training.csv")
    failed = [f"{r['plugin']} {r['dtype']}" for r in plugins if not r["ok"]]
    failed += [
        f"{r['library']} resnet50: loss did not fall" for r in training if not r["loss_fell"]
    ]
    (out / "report.md").write_text(_report(plugins, pair, training, failed, elapsed, device))
    print(f"wrote {out}/report.md ({elapsed / 60:.1f} min)")
    if failed:
        print(f"gpu-check: {len(failed)} failed: {', '.join(failed)}")
        return 1
    return 0


def _report(plugins, pair, training, failed, elapsed: float, device: torch.device) -> str:
    info = machine()
    where = info.get("gpu", info["cpu"]) if device.type == "cuda" else info["cpu"]
    lines = [
        "# GPU check",
        "",
        f"{where}; torch {info['torch']}; {elapsed / 60:.1f} min; "
        f"{'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}.",
        "",
        "## Every plugin under autocast, forward+backward",
        "",
        markdown_table(
            plugins,
            {
                "plugin": "plugin",
                "dtype": "autocast",
                "shape": "map",
                "ok": "finite",
                "kernel": "kernel",
                "train_ms": "ms",
                "train_peak_mib": "peak MiB",
                "note": "note",
            },
        ),
        "",
        "## RCCA and ISSA against non-local, forward+backward (fp32; the CCNet paper: 1/11)",
        "",
        markdown_table(
            pair,
            {
                "side": "block",
                "shape": "map",
                "train_peak_mib": "peak MiB",
                "peak_over_explicit_nonlocal": "/ explicit non-local",
                "train_ms": "ms",
            },
        ),
        "",
        "## resnet50, bf16 autocast, channels_last, one fixed batch",
        "",
        markdown_table(
            training,
            {
                "library": "library",
                "steps": "steps",
                "batch": "batch",
                "first_loss": "first loss",
                "last_loss": "last loss",
                "img_s": "img/s",
                "img_s_over_timm": "/ timm",
                "train_peak_mib": "peak MiB",
            },
        ),
        "",
    ]
    return "\n".join(lines)
