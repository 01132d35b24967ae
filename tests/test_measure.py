from pathlib import Path

import pytest
import torch
from torch import nn

from visionattn.measure import count_flops, count_parameters, peak_memory_mb


def test_flops_are_twice_the_multiply_accumulates_of_one_image():
    linear = nn.Linear(10, 20)
    assert count_flops(linear, torch.randn(4, 10)) == 2 * 10 * 20
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.randn(5, 3, 16, 16)) == 2 * (3 * 9) * 8 * 16 * 16


def test_flops_are_counted_in_eval_mode_and_leave_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    before = model[1].running_mean.clone()
    count_flops(model, torch.randn(2, 3, 8, 8) + 5)
    assert model.training
    torch.testing.assert_close(model[1].running_mean, before)


def test_parameters_count_frozen_ones_too():
    model = nn.Linear(3, 4)
    model.bias.requires_grad_(False)
    assert count_parameters(model) == 16


def _status_mib(field: str) -> float:
    line = next(
        x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field)
    )
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_cpu_peak_memory_is_the_process_peak_resident_set():
    cpu = torch.device("cpu")
    before = peak_memory_mb(cpu)
    assert abs(before - _status_mib("VmHWM:")) < 1
    # Touch enough memory to climb 100 MiB above the old peak.
    extra_mib = before - _status_mib("VmRSS:") + 100
    block = torch.ones(int(extra_mib * 2**20) // 4)
    after = peak_memory_mb(cpu)
    del block
    assert 90 < after - before < 130


def test_flops_count_the_multiply_accumulates_of_conv_plugins():
    from visionattn.attention import create_attention

    x = torch.randn(1, 16, 8, 6)
    dense = 2 * 16 * 16 * 9 * 8 * 6  # a 3x3 conv, 16 -> 16 channels
    deform = create_attention("deform", 16)
    offsets = 2 * 16 * 27 * 9 * 8 * 6  # 2 offsets and a modulation per tap
    assert count_flops(deform, x) == dense + offsets
    involution = create_attention("involution", 16, kernel_size=3, group_channels=4)
    aggregate = 2 * 16 * 9 * 8 * 6  # each channel: a 3x3 kernel applied at every position
    reduced = involution.reduce.eval()(x).detach()
    generate = count_flops(involution.reduce, x) + count_flops(involution.span, reduced)
    assert count_flops(involution, x) == aggregate + generate
