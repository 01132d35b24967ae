"""``task.channels_last`` and ``task.compile`` of visionattn/tasks/task.py."""

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from tests.tasks.test_classification import SCHEDULE, make_data, make_task, make_trainer
from visionattn.callbacks import CostMonitor
from visionattn.checkpoint import load_checkpoint
from visionattn.measure import count_flops
from visionattn.tasks import ClassificationTask

CHANNELS_LAST = torch.channels_last


def spatial_conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    """Weights of the convolutions with a kernel wider than 1x1, whose layout shows."""
    return [
        m.weight
        for m in module.modules()
        if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1
    ]


class RecordImages(Callback):
    def __init__(self) -> None:
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch["image"])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch["image"])


def test_channels_last_lays_out_weights_and_images_and_computes_the_same():
    torch.manual_seed(0)
    task = make_task(ema={"decay": 0.9}, channels_last=True)
    torch.manual_seed(0)
    contiguous = make_task()
    weights = spatial_conv_weights(task.model) + spatial_conv_weights(task.model_ema.module)
    assert weights and all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in weights)
    assert not any(w.is_contiguous() for w in weights)
    assert all(w.is_contiguous() for w in spatial_conv_weights(contiguous.model))

    images = torch.randn(4, 3, 16, 16)
    logits = task(images.contiguous(memory_format=CHANNELS_LAST))
    expected = contiguous(images)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    logits.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(
        task.model.conv1.weight.grad, contiguous.model.conv1.weight.grad, rtol=1e-4, atol=1e-5
    )

    seen = []
    training_step = task.training_step

    def record_training_step(batch, batch_idx):
        seen.append(batch["image"])
        return training_step(batch, batch_idx)

    task.training_step = record_training_step
    record = RecordImages()
    trainer = make_trainer(max_epochs=1, max_steps=2, num_sanity_val_steps=1, callbacks=[record])
    trainer.fit(task, make_data())
    assert len(seen) == 2 and len(record.val) == 1
    for image in [*seen, *record.train, *record.val]:
        assert image.is_contiguous(memory_format=CHANNELS_LAST) and not image.is_contiguous()


def make_small_task(**kwargs) -> ClassificationTask:
    """A ResNet of one block a stage without a plugin: fewer kernels for inductor to build."""
    model = {"name": "resnet18", "layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}
    optimizer = {"opt": "sgd", "lr": 0.1}
    return ClassificationTask(model, None, 4, optimizer, SCHEDULE, ema={"decay": 0.9}, **kwargs)


def test_a_compiled_run_trains_and_writes_the_checkpoint_of_an_uncompiled_one(tmp_path):
    """One compile, of the training step (cold about 20 s on a CPU; inductor keeps its cache in
    /tmp between runs)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    L.seed_everything(0)
    task = make_small_task(compile=True)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    monitor = CostMonitor()
    trainer = make_trainer(max_epochs=1, max_steps=3, limit_val_batches=0, callbacks=[monitor])
    trainer.fit(task, make_data())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert trainer.global_step == 3
    assert not torch.equal(task.model.state_dict()["conv1.weight"], before["conv1.weight"])

    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = load_checkpoint(tmp_path / "compiled.ckpt")["state_dict"]
    uncompiled = make_small_task()
    assert list(state) == list(uncompiled.state_dict())
    assert not any("_orig_mod" in key for key in state)
    uncompiled.load_state_dict(state)  # strict

    # The FLOPs of the compiled run are those of the same model run eagerly.
    assert monitor.flops == count_flops(uncompiled, torch.randn(1, 3, 16, 16)) > 0
    assert monitor.params == sum(p.numel() for p in uncompiled.model.parameters())
    torch._dynamo.reset()
