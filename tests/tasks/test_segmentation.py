import lightning as L
import pytest
import torch
import torch.nn.functional as F

from tests.tasks.test_classification import make_trainer
from visionattn.data import ShapesDataModule, ShapesSegmentationDataModule
from visionattn.segmentation.loss import segmentation_loss
from visionattn.tasks import ClassificationTask, SegmentationTask

TINY_MODEL = {"name": "resnet18", "layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64],
              "output_stride": 8, "img_size": 32}  # fmt: skip
OPTIMIZER = {"opt": "adamw", "lr": 5e-3, "weight_decay": 0.0}
SCHEDULE = {"sched": "none"}


def make_task(num_classes: int = 4, **kwargs) -> SegmentationTask:
    kwargs = {"head": {"name": "attention"}, "attn": {"name": "ccnet"}, **kwargs}
    return SegmentationTask(
        TINY_MODEL, num_classes=num_classes, optimizer=OPTIMIZER, scheduler=SCHEDULE, **kwargs
    )


def make_data(**kwargs) -> ShapesSegmentationDataModule:
    options = dict(image_size=32, num_classes=4, train_size=64, val_size=32, batch_size=16)
    return ShapesSegmentationDataModule(**(options | kwargs))


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.preds = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        self.preds.append((outputs["preds"], batch["mask"]))


def test_the_loss_adds_the_auxiliary_head_at_its_weight():
    task = make_task(aux_weight=0.4)
    task.train()
    images, masks = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    masks[:, :4] = 255
    outputs = task.model(images)
    losses = task.losses(outputs, masks)

    def cross_entropy(logits):
        logits = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, masks, ignore_index=255)

    torch.testing.assert_close(losses["decode"], cross_entropy(outputs["out"]))
    torch.testing.assert_close(losses["aux"], cross_entropy(outputs["aux"]))
    torch.testing.assert_close(losses["loss"], losses["decode"] + 0.4 * losses["aux"])


def test_ohem_from_the_config_reaches_both_losses():
    ohem = {"thresh": 0.1, "min_kept": 10}  # at init every probability is near 1/4
    task = make_task(ohem=ohem).train()
    images, masks = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    outputs = task.model(images)
    losses = task.losses(outputs, masks)
    for name, key in (("decode", "out"), ("aux", "aux")):
        torch.testing.assert_close(losses[name], segmentation_loss(outputs[key], masks, ohem=ohem))
        assert losses[name] != segmentation_loss(outputs[key], masks)


def test_without_an_auxiliary_weight_there_is_no_auxiliary_head():
    assert make_task(aux_weight=0.0).model.aux_head is None


def test_validation_scores_the_predictions_it_returns_against_the_labels():
    """mIoU, pixel accuracy and per-class IoU, recomputed here from the returned predictions."""
    task, data, recorder = make_task(), make_data(), Recorder()
    trainer = make_trainer(max_epochs=1, callbacks=[recorder])
    trainer.fit(task, data)
    [metrics] = trainer.validate(task, data, verbose=False)
    preds = torch.cat([p for p, _ in recorder.preds[-2:]])
    masks = torch.cat([m for _, m in recorder.preds[-2:]])
    assert len(preds) == 32 and preds.shape == masks.shape
    ious = []
    for c in range(4):
        inter = ((preds == c) & (masks == c)).sum().item()
        union = ((preds == c) | (masks == c)).sum().item()
        ious.append(inter / union if union else None)
    present = [iou for iou in ious if iou is not None]
    assert metrics["val/miou"] == pytest.approx(sum(present) / len(present))
    assert metrics["val/pixel_acc"] == pytest.approx((preds == masks).float().mean().item())
    names = ["background", "circle", "ring", "square"]
    assert list(task.scores["val"]["per_class_iou"]) == names
    for name, iou in zip(names, ious, strict=True):
        assert task.scores["val"]["per_class_iou"][name] == pytest.approx(iou)
        if iou is not None:
            assert metrics[f"val/iou/{name}"] == pytest.approx(iou)


@pytest.mark.parametrize(
    ("task", "data", "message"),
    [
        (make_task, lambda: ShapesDataModule(image_size=32, num_classes=4), "classification data"),
        (
            lambda: ClassificationTask(
                TINY_MODEL | {"output_stride": 32}, None, 4, OPTIMIZER, SCHEDULE
            ),
            make_data,
            "segmentation data",
        ),
    ],
    ids=["segmentation-on-labels", "classification-on-masks"],
)
def test_data_of_the_other_task_is_refused_before_training(task, data, message):
    with pytest.raises(ValueError, match=message) as error:
        make_trainer(max_epochs=1).fit(task(), data())
    assert "task=" in str(error.value)


def test_the_summary_has_the_json_keys_and_the_report_rows():
    task = make_task()
    task.scores["val"] = {"miou": 0.5, "pixel_acc": 0.9, "per_class_iou": {"a": 0.5, "b": None}}
    summary = task.summary({"val/loss": 0.3})
    assert summary["miou"] == 0.5 and summary["per_class_iou"]["b"] is None
    assert summary["inference"]["mode"] == "whole"
    rows = dict(task.summary_rows(summary, best=0.6, monitor="val/miou"))
    assert rows["val mIoU"] == "50.00% last epoch, 60.00% best"
    assert rows["val pixel acc"] == "90.00%"
