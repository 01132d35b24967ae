import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from visionattn.data import ShapesDataModule
from visionattn.tasks import ClassificationTask

TINY_MODEL = {"name": "resnet18", "channels": [8, 16, 32, 64]}
SCHEDULE = {"sched": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-4, "min_lr": 1e-5}


def make_task(num_classes: int = 4, lr: float = 5e-3, **kwargs) -> ClassificationTask:
    optimizer = {"opt": "adamw", "lr": lr, "weight_decay": 0.05}
    return ClassificationTask(
        TINY_MODEL, {"name": "se"}, num_classes, optimizer, SCHEDULE, **kwargs
    )


def make_data(train_size: int = 128) -> ShapesDataModule:
    return ShapesDataModule(
        image_size=16, num_classes=4, train_size=train_size, val_size=64, batch_size=32
    )


def make_trainer(**kwargs) -> L.Trainer:
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**(options | kwargs))


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    record = RecordLR()
    make_trainer(max_epochs=3, callbacks=[record]).fit(make_task(lr=1e-2), make_data())
    steps_per_epoch, total = 128 // 32, 3 * 128 // 32
    warmup, base, start, end = steps_per_epoch, 1e-2, SCHEDULE["warmup_lr"], SCHEDULE["min_lr"]
    expected = [
        start + t * (base - start) / warmup
        if t < warmup
        else end + 0.5 * (base - end) * (1 + math.cos(math.pi * t / total))
        for t in range(total)
    ]
    assert record.lrs == pytest.approx(expected)


def test_top1_and_top5():
    task = make_task(num_classes=10)
    logits = torch.arange(10.0).repeat(4, 1)  # class 9 first, then 8, 7, ...
    labels = torch.tensor([9, 8, 5, 0])  # ranked 1st, 2nd, 5th, 10th
    accuracies = task.val_metrics["val"]
    accuracies["acc1"](logits, labels)
    accuracies["acc5"](logits, labels)
    assert accuracies["acc1"].compute() == pytest.approx(1 / 4)
    assert accuracies["acc5"].compute() == pytest.approx(3 / 4)


def test_label_smoothing_reaches_the_training_loss_only():
    task = make_task(label_smoothing=0.2)
    assert task.train_criterion.label_smoothing == 0.2
    assert task.criterion.label_smoothing == 0.0


def test_mixup_trains_on_the_mixed_images_and_soft_targets():
    task = make_task(label_smoothing=0.1, mixup={"mixup_alpha": 0.8, "mode": "batch"})
    task.log = task.log_lr = lambda *args, **kwargs: None
    logits = torch.randn(4, 4)
    seen = []
    task.model.forward = lambda x: seen.append(x.clone()) or logits
    images = torch.rand(5, 3, 8, 8)  # odd: the last image is dropped, timm pairs the batch
    labels = torch.tensor([0, 1, 2, 3, 0])
    loss = task.training_step({"image": images.clone(), "label": labels}, 0)

    # One lam for the batch: x_mixed = lam x + (1 - lam) x reversed.
    [mixed] = seen
    x, reversed_x = images[:4], images[:4].flip(0)
    lam = float(((mixed - reversed_x) / (x - reversed_x)).flatten()[0])
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * reversed_x)
    # The targets mix alike, after label smoothing; the loss is their cross-entropy.
    off, on = 0.1 / 4, 1 - 0.1 + 0.1 / 4
    smoothed = torch.full((4, 4), off).scatter_(1, labels[:4, None], on)
    target = lam * smoothed + (1 - lam) * smoothed.flip(0)
    torch.testing.assert_close(loss, (-target * logits.log_softmax(-1)).sum(-1).mean())


def test_resuming_replays_an_uninterrupted_run_exactly(tmp_path):
    L.seed_everything(0)
    straight = make_task()
    make_trainer(max_epochs=2).fit(straight, make_data())

    L.seed_everything(0)
    interrupted = make_task()
    first = make_trainer(max_epochs=2, max_steps=128 // 32)
    first.fit(interrupted, make_data())
    first.save_checkpoint(tmp_path / "epoch0.ckpt")
    assert first.current_epoch == 1 and first.global_step == 4

    L.seed_everything(123)  # the resumed process need not share the first one's RNG state
    resumed = make_task()
    second = make_trainer(max_epochs=2)
    second.fit(resumed, make_data(), ckpt_path=tmp_path / "epoch0.ckpt", weights_only=True)
    assert second.global_step == 8
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_a_model_that_cannot_learn_stays_at_chance():
    """With a zero learning rate nothing is learned, so no label leaks into images or metrics."""
    task = make_task(lr=0.0)
    data = make_data(train_size=256)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(task, data)
    [metrics] = trainer.validate(task, data, verbose=False)
    assert metrics["val/acc1"] <= 0.25 + 0.1  # four balanced classes


def test_the_report_puts_the_best_score_beside_the_monitored_score():
    task = make_task()
    average = {"acc1": 0.6, "acc5": 0.95, "loss": 0.9}
    summary = {"acc1": 0.5, "acc5": 0.9, "loss": 1.0, "ema": average}
    rows = dict(task.summary_rows(summary, best=0.7, monitor="val/acc1"))
    assert rows["val acc1"] == "50.00% last epoch, 70.00% best"
    assert rows["val acc1 (EMA)"] == "60.00%"
    rows = dict(task.summary_rows(summary, best=0.7, monitor="val_ema/acc1"))
    assert rows["val acc1"] == "50.00%"
    assert rows["val acc1 (EMA)"] == "60.00% last epoch, 70.00% best"
    # A score the report does not show gets a row of its own.
    *scores, last = task.summary_rows(summary, best=0.85, monitor="val/loss")
    assert last == ("best val/loss", "0.85")
    assert [name for name, _ in scores] == [
        "val acc1", "val acc5", "val acc1 (EMA)", "val acc5 (EMA)"
    ]  # fmt: skip
    assert not any("best" in value for _, value in scores)


@pytest.mark.parametrize("algorithm", [None, "norm", "value"])
def test_gradient_clipping_bounds_the_first_update(algorithm):
    # Plain SGD's first step is lr x gradient, so the update shows the clipped gradient.
    lr, clip = 0.5, 1e-3
    optimizer = {"opt": "momentum", "lr": lr, "momentum": 0.0, "weight_decay": 0.0}
    task = ClassificationTask(TINY_MODEL, {"name": "se"}, 4, optimizer, {"sched": "cosine"})
    before = torch.cat([p.detach().flatten().clone() for p in task.model.parameters()])
    clipping = {"gradient_clip_val": clip, "gradient_clip_algorithm": algorithm}
    make_trainer(max_epochs=1, max_steps=1, **(clipping if algorithm else {})).fit(
        task, make_data()
    )
    after = torch.cat([p.detach().flatten() for p in task.model.parameters()])
    gradient = (before - after) / lr
    if algorithm is None:
        assert gradient.norm() > 10 * clip
    elif algorithm == "norm":
        assert gradient.norm() == pytest.approx(clip, rel=1e-3)
    else:
        assert gradient.abs().max() == pytest.approx(clip, rel=1e-3)
