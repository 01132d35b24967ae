"""``python -m visionattn.bench.fresh PLUGIN B C SIZE [--explicit] [KNOB=VALUE ...]``: one
forward+backward of a plugin in this fresh process, printing how far the peak resident set
(``VmHWM``) rose above the resident set before the call, in MiB.

The allocator's figure (``measure.peak_call_memory``) counts tensors; this one counts what the
operating system gave the process, allocator caches and workspaces included, which is what runs
out first. A fresh process, because a process's peak cannot be reset.

The child runs with glibc's mmap threshold fixed at 1 MiB (``MALLOC_MMAP_THRESHOLD_``), so a
tensor's memory goes back to the system when PyTorch frees it. Left dynamic, glibc raises the
threshold after the first large free and keeps later blocks of up to 32 MiB in its heap: the
figure then counts that retention, and varied by 25% between identical runs (ccnet at
1x512x97x97: 151 to 191 MiB, against 119 MiB in every run with the threshold fixed).
"""

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

MIB = 2**20


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / MIB
    raise OSError(f"/proc/self/status has no {field}: a fresh-process peak needs Linux's /proc")


def resident_growth_mib(
    name: str, batch: int, channels: int, size: int, *, explicit: bool = False, **knobs
) -> float:
    """Run the case in a child process and return its ``VmHWM`` growth during the call."""
    command = [sys.executable, "-m", "visionattn.bench.fresh", name, str(batch), str(channels)]
    command += [str(size), *(["--explicit"] if explicit else [])]
    command += [f"{key}={value!r}" for key, value in knobs.items()]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MIB)}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1]}")
    return float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m visionattn.bench.fresh")
    parser.add_argument("plugin")
    parser.add_argument("batch", type=int)
    parser.add_argument("channels", type=int)
    parser.add_argument("size", type=int)
    parser.add_argument("--explicit", action="store_true", help="softmax(QK^T)V written out")
    parser.add_argument("knobs", nargs="*", metavar="KNOB=VALUE")
    args = parser.parse_intermixed_args(argv)
    knobs = {k: ast.literal_eval(v) for k, v in (knob.split("=", 1) for knob in args.knobs)}

    import contextlib

    import torch

    from visionattn.bench.plugins import build_plugin, train_call
    from visionattn.bench.versus import explicit_attention

    torch.manual_seed(0)
    module = build_plugin(args.plugin, args.channels, args.size, args.size, **knobs)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    step = train_call(module, x)
    before = _status("VmRSS")
    with explicit_attention() if args.explicit else contextlib.nullcontext():
        step()
    print(f"{_status('VmHWM') - before:.1f}")


if __name__ == "__main__":
    main()
