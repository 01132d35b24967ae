"""Checkpoints survive a kill at any moment of their writing."""

import random
import signal
import subprocess
import sys
import time

import torch

from tests.helpers import ROOT
from visionattn.checkpoint import load_checkpoint

# Saves checkpoints of 64 MB over the same path as fast as it can: most of its time is writing.
WRITER = """
import sys, torch
from visionattn.checkpoint_io import AtomicCheckpointIO
io, weights, i = AtomicCheckpointIO(), torch.arange(8_000_000), 0
while True:
    io.save_checkpoint({"weights": weights}, sys.argv[1])
    print(i, flush=True)
    i += 1
"""


def test_a_kill_mid_write_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    rng = random.Random(0)
    for _ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        writer.stdout.readline()  # one checkpoint is complete
        time.sleep(rng.uniform(0.0, 0.3))  # then kill it somewhere in a later one
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        checkpoint = load_checkpoint(path)
        assert torch.equal(checkpoint["weights"], torch.arange(8_000_000))
    # The killed writes' temporary files are cleared by the next save.
    assert len(list(path.parent.iterdir())) <= 2
