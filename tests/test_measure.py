import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from visionattn.attention import create_attention
from visionattn.measure import (
    MIB,
    attention_kernels,
    count_flops,
    count_parameters,
    peak_call_memory,
    peak_memory_mb,
    reset_peak_memory,
    time_call,
)


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


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resets VmHWM via /proc")
def test_cpu_peak_memory_resets_so_one_process_runs_can_be_compared():
    # A multirun trains its jobs one after another in one process: a later, smaller model must
    # not report the peak of an earlier, larger one.
    cpu = torch.device("cpu")
    block = torch.ones(200 * 2**20 // 4)
    high = peak_memory_mb(cpu)
    del block
    reset_peak_memory(cpu)
    low = peak_memory_mb(cpu)
    assert high - low > 150
    assert abs(low - _status_mib("VmRSS:")) < 20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resets VmHWM via /proc")
def test_cpu_peak_memory_reset_leaves_out_the_pages_an_earlier_run_freed():
    # Small blocks come from the heap, which keeps freed pages where a survivor sits above them:
    # without handing them back, each job of a multirun started a little higher (971, 1010,
    # 1052 MiB for three identical runs).
    cpu = torch.device("cpu")
    blocks = [torch.ones(16 * 1024) for _ in range(4000)]  # 64 KiB each, 250 MiB
    survivors = blocks[::50]
    del blocks
    held = _status_mib("VmRSS:")
    reset_peak_memory(cpu)
    assert held - peak_memory_mb(cpu) > 150, "the freed pages still count"
    assert len(survivors) == 80


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


def test_call_memory_is_the_allocators_peak_above_what_was_held_before():
    cpu = torch.device("cpu")
    held = torch.ones(2**20)  # allocated before the call: not counted

    def call():
        a = torch.ones(2**20)  # 4 MiB
        b = a * 2  # 8 MiB live here, the peak
        del a
        c = b + 1  # 8 MiB again, never more
        return c.sum() + held.sum()

    # 8 MiB, and the few bytes of the two sums' scalars.
    assert 8 * MIB <= peak_call_memory(call, cpu) < 8 * MIB + 1024


def test_the_profiler_says_nothing_on_stderr_and_the_call_still_does(capfd):
    """Kineto writes `USDT: ... profiler_start` (and without a GPU an ERROR line) to fd 2 each time
    the CPU memory or kernel figures start and stop it; the call's own output must still show."""

    def call():
        print("the call's own line", file=sys.stderr)
        return torch.ones(16).sum()

    peak_call_memory(call, torch.device("cpu"))
    attention_kernels(call)
    err = capfd.readouterr().err
    assert err.count("the call's own line") == 2
    assert "USDT" not in err and "profiler_st" not in err and "gpuGetDeviceCount" not in err


def test_call_memory_sees_a_fused_attention_kernel_save_the_n_by_n_matrix():
    cpu = torch.device("cpu")
    x = torch.randn(1, 64, 32, 32)
    module = create_attention("nonlocal", 64, sub_sample=False)

    def step():
        module(x).sum().backward()

    # Through ops.attend the (B, C, H, W) map, seen as (B, N, C), reaches a fused kernel; the
    # 1024 x 1024 fp32 weights alone would be 4 MiB.
    assert attention_kernels(step) == ["flash"]
    assert peak_call_memory(step, cpu) < 4 * MIB


@pytest.mark.parametrize("value_width", [16, 40])  # the flash kernel, then the math kernel
def test_flops_count_attention_on_every_kernel(value_width):
    class Attention(nn.Module):
        def forward(self, q):
            k = q[..., :50, :]
            v = torch.ones(q.shape[0], 3, 50, value_width)
            return nn.functional.scaled_dot_product_attention(q, k, v)

    q = torch.randn(2, 3, 70, 16)  # counted on the first image: 3 heads, 70 queries, 50 keys
    # q k^T (70 x 50 x 16) and the weights times v (70 x 50 x e): two FLOPs a multiply-add
    assert count_flops(Attention(), q) == 2 * 3 * 70 * 50 * (16 + value_width)


def test_time_call_repeats_after_warmup_and_reports_the_median():
    calls = []

    def call():
        calls.append(len(calls))
        time.sleep(0.002 if len(calls) % 2 else 0.004)

    timing = time_call(call, torch.device("cpu"), warmup=3, repeats=5, min_time_s=0.0)
    assert len(calls) == 3 + 5 and timing.repeats == 5
    # Timed calls 4..8 slept 4, 2, 4, 2, 4 ms: the median is 4 ms, not the 3.2 ms mean.
    assert 4.0 <= timing.median_ms < 6.0
