"""Whole models: what a backbone with a plugin costs to train and to run, for a model x attn grid.

A training step is forward, cross-entropy, backward and an SGD step (momentum 0.9), at bf16
autocast on a GPU (fp32 on a CPU, where autocast would time the casts rather than the model);
inference is a forward in eval mode without autograd. Throughput is images per second of the
median step; peak memory is above the weights and the optimiser's state (made by the warm-up).
"""

from collections.abc import Callable

import torch
from torch import nn

from visionattn.bench.configs import model_config
from visionattn.bench.plugins import Repeats
from visionattn.measure import MIB, count_flops, count_parameters, peak_call_memory
from visionattn.models import create_model

NUM_CLASSES = 1000


def autocast(device: torch.device):
    """bf16 mixed precision where a GPU runs the step, as ``trainer.precision=bf16-mixed``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_step(
    model: nn.Module, batch: int, image_size: int, device: torch.device
) -> Callable[[], None]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        model.train()
        with autocast(device):
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # at the end: see plugins.train_call

    return step


def inference_step(
    model: nn.Module, batch: int, image_size: int, device: torch.device
) -> Callable[[], None]:
    images = torch.randn(batch, 3, image_size, image_size).to(device)

    def step() -> None:
        model.eval()
        with torch.no_grad(), autocast(device):
            model(images)

    return step


def build_model(model: str, attn: str, image_size: int) -> nn.Module:
    """``model=<model> attn=<attn>`` as train.py builds it, with ImageNet's 1000 classes."""
    model_cfg, attn_cfg = model_config(model, attn, image_size)
    return create_model(attn=attn_cfg, num_classes=NUM_CLASSES, **model_cfg)


def measure_model(
    module: nn.Module, batch: int, image_size: int, device: torch.device, repeats: Repeats
) -> dict:
    """Throughput, memory, parameters and FLOPs of one built model."""
    module = module.to(device)
    train = train_step(module, batch, image_size, device)
    infer = inference_step(module, batch, image_size, device)
    train_ms = repeats.time(train, device)  # its warm-up makes the optimiser's state
    infer_ms = repeats.time(infer, device)
    flops = count_flops(module, torch.randn(1, 3, image_size, image_size, device=device))
    return {
        "params": count_parameters(module),
        "gflops": flops / 1e9,
        "train_img_s": batch / train_ms * 1e3,
        "infer_img_s": batch / infer_ms * 1e3,
        "train_peak_mib": peak_call_memory(train, device) / MIB,
        "infer_peak_mib": peak_call_memory(infer, device) / MIB,
    }


def measure_grid(
    models: list[str],
    attns: list[str],
    batch: int,
    image_size: int,
    device: torch.device,
    repeats: Repeats,
    log: Callable[[str], None] = print,
) -> list[dict]:
    rows = []
    for model in models:
        for attn in attns:
            row = {"model": model, "attn": attn, "batch": batch, "image_size": image_size}
            try:
                built = build_model(model, attn, image_size)
            except ValueError as err:  # a plugin that cannot sit in this model at this size
                rows.append({**row, "note": str(err)})
                continue
            rows.append({**row, **measure_model(built, batch, image_size, device, repeats)})
            rows[-1]["note"] = ""
            log(f"model {model} attn={attn}: {rows[-1]['train_img_s']:.1f} img/s training")
    return rows
