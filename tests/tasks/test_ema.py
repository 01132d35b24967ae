"""The weight EMA of visionattn/tasks/task.py: its update, its checkpoint, its validation, and
eval.py's ``ema=true``."""

import json
import re
import shlex
from itertools import pairwise

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from tests.helpers import read_metrics, run_script
from tests.tasks import test_segmentation
from tests.tasks.test_classification import make_data, make_task, make_trainer
from visionattn.checkpoint import load_checkpoint
from visionattn.tasks.task import model_weights


def float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


class RecordUpdates(Callback):
    """The weights, their average and the update count after every batch."""

    def __init__(self) -> None:
        self.after: list[tuple[int, dict, dict]] = []

    def on_train_start(self, trainer, pl_module):
        self.after.append(
            (0, float_state(pl_module.model), float_state(pl_module.model_ema.module))
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        model, ema = float_state(pl_module.model), float_state(pl_module.model_ema.module)
        self.after.append((trainer.global_step, model, ema))


@pytest.mark.parametrize("use_warmup", [False, True], ids=["constant", "warmup"])
def test_the_average_follows_the_formula_once_per_optimizer_step(use_warmup):
    decay = 0.9
    task = make_task(lr=1e-2, ema={"decay": decay, "use_warmup": use_warmup})
    updates = []
    update = task.model_ema.update
    task.model_ema.update = lambda model, step: updates.append(step) or update(model, step)
    record = RecordUpdates()
    trainer = make_trainer(
        max_epochs=1, accumulate_grad_batches=2, callbacks=[record], limit_val_batches=0
    )
    trainer.fit(task, make_data(train_size=256))  # 8 batches, 4 updates

    assert trainer.global_step == 4 and updates == [1, 2, 3, 4]
    for (step_before, _, ema_before), (step, weights, ema) in pairwise(record.after):
        if step == step_before:  # a batch whose gradients wait for the next: no update
            for name in ema:
                torch.testing.assert_close(ema[name], ema_before[name], rtol=0, atol=0)
            continue
        # timm counts updates from 1; the first copies the weights.
        if step == 1:
            d = 0.0
        elif use_warmup:
            d = min(decay, 1 - (1 + (step - 1)) ** (-2 / 3))
        else:
            d = decay
        for name in ema:
            expected = d * ema_before[name] + (1 - d) * weights[name]
            torch.testing.assert_close(ema[name], expected, msg=f"update {step}: {name}")
        assert step == 1 or any(not torch.equal(ema[n], weights[n]) for n in ema)


def test_the_average_is_a_frozen_copy_outside_the_optimizer():
    task = make_task(ema={"decay": 0.99})
    trainer = make_trainer(max_epochs=1, max_steps=1, limit_val_batches=0)
    trainer.fit(task, make_data())
    ema_params = list(task.model_ema.parameters())
    assert ema_params and not any(p.requires_grad for p in ema_params)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in task.model.parameters()}
    assert optimized.isdisjoint(id(p) for p in ema_params)
    keys = task.state_dict().keys()
    model_keys = [k.removeprefix("model.") for k in keys if k.startswith("model.")]
    assert [k for k in keys if k.startswith("model_ema.")] == [
        f"model_ema.module.{k}" for k in model_keys
    ]


def test_decay_zero_keeps_no_average():
    task = make_task(ema={"decay": 0.0, "use_warmup": False})
    assert task.model_ema is None
    assert not any(k.startswith("model_ema") for k in task.state_dict())
    assert list(task.val_metrics) == ["val"]


def test_a_resumed_run_continues_from_the_saved_average(tmp_path):
    """Stopped after the first epoch and resumed, a run ends with the average of one that was not
    stopped: the average comes from the checkpoint, not afresh from the weights."""
    ema = {"decay": 0.9}
    L.seed_everything(0)
    straight = make_task(ema=ema)
    make_trainer(max_epochs=2, limit_val_batches=0).fit(straight, make_data())

    L.seed_everything(0)
    interrupted = make_task(ema=ema)
    first = make_trainer(max_epochs=2, max_steps=4, limit_val_batches=0)
    first.fit(interrupted, make_data())
    first.save_checkpoint(tmp_path / "epoch0.ckpt")
    saved = load_checkpoint(tmp_path / "epoch0.ckpt")["state_dict"]
    average = saved["model_ema.module.conv1.weight"]
    assert torch.equal(average, interrupted.model_ema.module.conv1.weight)
    assert not torch.equal(average, saved["model.conv1.weight"])  # a fresh copy would differ

    L.seed_everything(123)
    resumed = make_task(ema=ema)
    second = make_trainer(max_epochs=2, limit_val_batches=0)
    second.fit(resumed, make_data(), ckpt_path=tmp_path / "epoch0.ckpt", weights_only=True)
    assert second.global_step == 8
    for (key, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=key)


def test_resuming_switches_the_average_on_or_off(tmp_path):
    """As timm's train.py: an average the checkpoint lacks starts from the checkpoint's weights."""
    first = make_trainer(max_epochs=1, limit_val_batches=0)
    first.fit(make_task(), make_data())
    first.save_checkpoint(tmp_path / "plain.ckpt")
    saved = float_state(first.lightning_module.model)

    switched_on = make_task(ema={"decay": 0.9})
    second = make_trainer(max_epochs=2, max_steps=5, limit_val_batches=0)
    second.fit(switched_on, make_data(), ckpt_path=tmp_path / "plain.ckpt", weights_only=True)
    assert second.global_step == 5
    weights, ema = float_state(switched_on.model), float_state(switched_on.model_ema.module)
    for name in ema:  # the first update after the checkpoint's 4th is the 5th: decay 0.9
        torch.testing.assert_close(ema[name], 0.9 * saved[name] + 0.1 * weights[name], msg=name)

    second.save_checkpoint(tmp_path / "ema.ckpt")
    switched_off = make_task()
    third = make_trainer(max_epochs=3, limit_val_batches=0)
    third.fit(switched_off, make_data(), ckpt_path=tmp_path / "ema.ckpt", weights_only=True)
    assert third.global_step > 5 and switched_off.model_ema is None


def reference_scores(model: torch.nn.Module) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` over make_data's validation split."""
    data = make_data()
    data.setup("validate")
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits.append(model(batch["image"]))
            labels.append(batch["label"])
    logits, labels = torch.cat(logits), torch.cat(labels)
    acc1 = (logits.argmax(1) == labels).float().mean().item()
    return acc1, F.cross_entropy(logits, labels).item()


def test_the_average_is_validated_beside_the_weights():
    task, data = make_task(lr=1e-2, ema={"decay": 0.9}), make_data()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(task, data)
    [metrics] = trainer.validate(task, data, verbose=False)
    assert {"val_ema/acc1", "val_ema/acc5", "val_ema/loss"} <= metrics.keys()
    assert not any(k.startswith("val_ema") for k in trainer.progress_bar_metrics)
    assert "val/acc1" in trainer.progress_bar_metrics
    assert metrics["val_ema/loss"] != pytest.approx(metrics["val/loss"])
    acc1, loss = reference_scores(task.model_ema.module)
    assert metrics["val_ema/acc1"] == pytest.approx(acc1)
    assert metrics["val_ema/loss"] == pytest.approx(loss, rel=1e-5)
    acc1, loss = reference_scores(task.model)
    assert metrics["val/acc1"] == pytest.approx(acc1)
    assert metrics["val/loss"] == pytest.approx(loss, rel=1e-5)

    task.model_ema.set(task.model)  # an average equal to the weights scores as they do
    [metrics] = trainer.validate(task, data, verbose=False)
    for key in ("acc1", "acc5", "loss"):
        assert metrics[f"val_ema/{key}"] == metrics[f"val/{key}"], key

    rows = dict(task.summary_rows(task.summary({k: float(v) for k, v in metrics.items()})))
    assert rows["val acc1 (EMA)"] == rows["val acc1"] != "n/a"
    assert rows["val acc5 (EMA)"] == rows["val acc5"]


def test_segmentation_validates_the_average_beside_the_weights():
    task = test_segmentation.make_task(attn=None, ema={"decay": 0.5})
    data = test_segmentation.make_data()
    trainer = make_trainer(max_epochs=1)
    trainer.fit(task, data)
    [metrics] = trainer.validate(task, data, verbose=False)
    assert {"val_ema/miou", "val_ema/pixel_acc", "val_ema/loss"} <= metrics.keys()
    assert metrics["val_ema/loss"] != pytest.approx(metrics["val/loss"])
    assert task.scores.keys() == {"val", "val_ema"}

    task.model_ema.set(task.model)
    [metrics] = trainer.validate(task, data, verbose=False)
    for key in ("miou", "pixel_acc", "loss"):
        assert metrics[f"val_ema/{key}"] == metrics[f"val/{key}"], key
    summary = task.summary({k: float(v) for k, v in metrics.items()})
    assert summary["ema"]["per_class_iou"] == summary["per_class_iou"]
    rows = dict(task.summary_rows(summary))
    assert rows["val mIoU (EMA)"] == rows["val mIoU"] != "n/a"


def test_either_weights_load_into_a_task_without_an_average():
    trained = make_task(ema={"decay": 0.9})
    with torch.no_grad():
        for p in trained.model_ema.parameters():
            p.add_(1.0)
    state = trained.state_dict()
    for ema, source in ((False, trained.model), (True, trained.model_ema.module)):
        plain = make_task()
        plain.load_state_dict(model_weights(state, ema=ema))  # strict: every key, no other
        for (key, a), b in zip(
            plain.model.state_dict().items(), source.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    assert model_weights(make_task().state_dict(), ema=True) == {}


def test_eval_of_the_average_reproduces_its_logged_accuracy(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_script(
        "train.py",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "data.train_size=256",
        "task.ema.decay=0.9",
        "monitor=val_ema/acc1",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        tmp=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    # The best score sits on the row of the monitored average, and the command evaluates it.
    assert re.search(r"val acc1 \(EMA\) +[\d.]+% last epoch, [\d.]+% best", trained.stdout)
    [command] = [
        x.strip() for x in trained.stdout.splitlines() if x.strip().startswith("python eval.py")
    ]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    assert shlex.split(command)[2:] == [f"ckpt_path={ckpt}", "ema=true"]
    output = tmp_path / "eval.json"
    evaluated = run_script(
        "eval.py", *shlex.split(command)[2:], f"output={output}",
        f"hydra.run.dir={tmp_path / 'eval'}", tmp=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(output.read_text())
    [last] = [r for r in read_metrics(run_dir) if r["val_ema/acc1"] and int(r["epoch"]) == 0]
    assert result["weights"] == "ema"
    assert result["acc1"] == pytest.approx(float(last["val_ema/acc1"]), abs=1e-6)
    assert result["loss"] == pytest.approx(float(last["val_ema/loss"]), rel=1e-5)
    assert float(last["val_ema/loss"]) != pytest.approx(float(last["val/loss"]), rel=1e-3)

    # The same checkpoint as a run without an average writes it.
    checkpoint = load_checkpoint(ckpt)
    checkpoint["state_dict"] = model_weights(checkpoint["state_dict"])
    checkpoint["visionattn_config"]["task"]["ema"]["decay"] = 0.0
    plain = tmp_path / "plain.ckpt"
    torch.save(checkpoint, plain)
    refused = run_script(
        "eval.py", f"ckpt_path={plain}", "ema=true", f"hydra.run.dir={tmp_path / 'x'}",
        tmp=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(plain) in line and "task.ema.decay" in line


def test_both_scores_are_exact_over_two_processes():
    """Each process validates half the images; the logged scores are those of all of them."""
    task, data = make_task(lr=1e-2, ema={"decay": 0.9}), make_data()
    with torch.no_grad():  # an average apart from the weights, as after training
        for p in task.model_ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected = {
        prefix: reference_scores(model) for prefix, model in task.validated_models().items()
    }
    trainer = make_trainer(strategy="ddp_fork", devices=2)
    [metrics] = trainer.validate(task, data, verbose=False)
    assert trainer.world_size == 2
    for prefix, (acc1, loss) in expected.items():
        assert metrics[f"{prefix}/acc1"] == pytest.approx(acc1, abs=1e-6), prefix
        assert metrics[f"{prefix}/loss"] == pytest.approx(loss, rel=1e-5), prefix
    assert expected["val"] != expected["val_ema"]
