"""16-mixed's gradient scaler across a resume. Lightning turns ``precision=16-mixed`` into
bf16-mixed on CPUs, so the test hands it the same plugin a GPU run gets, with a CPU scaler and
fp16 autocast, which CPUs have."""

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision

from tests.tasks.test_classification import make_data, make_task, make_trainer
from visionattn.checkpoint import load_checkpoint
from visionattn.checkpoint_io import AtomicCheckpointIO


def fp16_trainer(**kwargs) -> L.Trainer:
    # The scale doubles after every step without overflow, so it counts the steps it has seen.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0, growth_interval=1)
    plugins = [MixedPrecision("16-mixed", "cpu", scaler), AtomicCheckpointIO()]
    return make_trainer(plugins=plugins, limit_val_batches=0, **kwargs)


def scale(trainer: L.Trainer) -> float:
    return trainer.precision_plugin.scaler.get_scale()


def test_the_gradient_scale_is_saved_and_restored_on_resume(tmp_path):
    L.seed_everything(0)
    straight = make_task()
    whole = fp16_trainer(max_epochs=2)
    whole.fit(straight, make_data())
    assert whole.global_step == 8
    assert scale(whole) == 2.0 * 2**8  # no step overflowed

    L.seed_everything(0)
    first = fp16_trainer(max_epochs=2, max_steps=4)
    first.fit(make_task(), make_data())
    first.save_checkpoint(tmp_path / "last.ckpt")
    saved = load_checkpoint(tmp_path / "last.ckpt")  # weights_only
    assert saved["MixedPrecision"]["scale"] == 2.0 * 2**4

    # A fresh scaler starts at 2: only the checkpoint's scale can bring it to the straight run's.
    L.seed_everything(123)
    resumed = make_task()
    second = fp16_trainer(max_epochs=2)
    second.fit(resumed, make_data(), ckpt_path=tmp_path / "last.ckpt", weights_only=True)
    assert second.global_step == 8
    assert scale(second) == scale(whole)
    for (key, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=key)
