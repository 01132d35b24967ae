"""``memory_limit_mb``: the memory of a training step, measured at two small batches before
training, extrapolated to the run's batch, and a step that needs more refused in one line."""

import pytest
import torch
from torch import nn

from tests.helpers import run_script
from visionattn.attention import create_attention
from visionattn.measure import MIB, peak_call_memory
from visionattn.memory_limit import MemoryLimitError, check_memory_limit, step_memory


class Segmentor(nn.Module):
    """A stem, a global attention block, and main and auxiliary logits, as our segmentors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.attn = create_attention("sagan", 16)
        self.main, self.aux = nn.Conv2d(16, 5, 1), nn.Conv2d(16, 5, 1)
        with torch.no_grad():
            self.attn.gamma.fill_(1.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.attn(self.stem(x))
        return {"out": self.main(x), "aux": self.aux(x)}


def measured_step(model: nn.Module, batch: int, size: int) -> float:
    """What a step at ``batch`` really holds at its peak: the activations and gradients measured,
    plus the weights and AdamW's two states."""
    images = torch.randn(batch, 3, size, size)

    def step() -> None:
        outputs = model(images)
        sum(o.sum() for o in outputs.values()).backward()
        model.zero_grad(set_to_none=True)

    params = sum(p.numel() * 4 for p in model.parameters()) / MIB
    return peak_call_memory(step, torch.device("cpu")) / MIB + 3 * params


def test_the_estimate_extrapolated_from_two_batches_matches_a_larger_batch():
    torch.manual_seed(0)
    model = Segmentor()
    memory = step_memory(model, 24)
    assert memory.per_image_mib > 0
    for batch in (6, 10):
        assert memory.at(batch) == pytest.approx(measured_step(model, batch, 24), rel=0.1)


def test_measuring_leaves_the_random_stream_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    step_memory(model, 16)
    torch.testing.assert_close(torch.rand(4), expected)


def test_a_step_over_the_limit_is_refused_naming_the_need_and_a_batch_that_fits():
    torch.manual_seed(0)
    model = Segmentor()
    memory = step_memory(model, 24)
    limit = memory.at(5) + 0.01
    assert check_memory_limit(model, 24, 5, limit) == memory
    with pytest.raises(MemoryLimitError) as err:
        check_memory_limit(model, 24, 8, limit)
    message = str(err.value)
    assert f"needs about {memory.at(8):,.0f} MiB" in message
    assert "data.batch_size=5 fits" in message and f"memory_limit_mb={limit:g}" in message
    with pytest.raises(MemoryLimitError, match=r"no batch fits at this size: lower data\.image"):
        check_memory_limit(model, 24, 8, memory.at(0) / 2)


@pytest.mark.parametrize("limit", [0, -5, "lots", True])
def test_a_limit_that_is_not_a_positive_number_is_refused(limit):
    with pytest.raises(MemoryLimitError, match=r"memory_limit_mb must be a positive number"):
        check_memory_limit(Segmentor(), 24, 2, limit)


def test_train_py_refuses_before_any_logger_or_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py",
        "experiment=smoke",
        "memory_limit_mb=1",
        f"hydra.run.dir={run_dir}",
        tmp=tmp_path,
    )
    assert result.returncode == 1
    # Lightning's seed line is the console noise of issue 20; nothing else may come.
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("INFO: Seed set")]
    assert len(lines) == 1 and lines[0].startswith("error: a training step at data.batch_size=64")
    # resnet18_half's weights and AdamW's state alone are over 1 MiB: no batch fits
    assert "more than memory_limit_mb=1; no batch fits at this size" in lines[0]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "config.yaml").exists()
    assert not (run_dir / "wandb").exists()
