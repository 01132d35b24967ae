import math
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visionattn.segmentation.metrics import SegmentationMetrics, scores_from_confusion

# Ten pixels, two of them unlabelled; class 3 is neither labelled nor predicted.
TARGET = torch.tensor([[[0, 0, 0, 1, 1], [2, 2, 255, 255, 1]]])
PREDS = torch.tensor([[[0, 0, 1, 1, 2], [2, 0, 1, 2, 1]]])
# Row: true class, column: predicted class, counted by hand from the eight labelled pixels.
CONFUSION = torch.tensor(
    [
        [2, 1, 0, 0],
        [0, 2, 1, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
    ]
)


def test_confusion_and_scores_of_a_hand_counted_example():
    metric = SegmentationMetrics(num_classes=4)
    metric.update(PREDS, TARGET)
    scores = metric.compute()

    assert torch.equal(scores["confusion"], CONFUSION)
    assert scores["confusion"].dtype == torch.int64
    # IoU = TP / (labelled + predicted - TP): 2 / (3 + 3 - 2), 2 / (3 + 3 - 2), 1 / (2 + 2 - 1).
    iou = scores["per_class_iou"].tolist()
    assert iou[:3] == pytest.approx([1 / 2, 1 / 2, 1 / 3])
    assert math.isnan(iou[3])
    assert scores["miou"].item() == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
    assert scores["pixel_acc"].item() == pytest.approx(5 / 8)
    acc = scores["per_class_acc"].tolist()
    assert acc[:3] == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert math.isnan(acc[3])
    assert scores["macc"].item() == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)


def test_a_class_predicted_but_never_labelled_counts_as_zero_iou():
    scores = scores_from_confusion(torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 0]]))
    iou = scores["per_class_iou"].tolist()
    assert iou[:2] == [0.5, 0.0]
    assert math.isnan(iou[2])
    assert scores["miou"].item() == 0.25
    assert scores["macc"].item() == 0.5  # class 1 has no accuracy: nothing of it was labelled


def test_updates_accumulate():
    preds = torch.randint(0, 5, (6, 7, 9))
    target = torch.randint(0, 5, (6, 7, 9))
    target[target == 4] = 255
    split = SegmentationMetrics(5)
    for i in range(0, 6, 2):
        split.update(preds[i : i + 2], target[i : i + 2])
    whole = SegmentationMetrics(5)
    whole.update(preds, target)
    assert torch.equal(split.compute()["confusion"], whole.compute()["confusion"])


def test_ignored_pixels_may_hold_any_prediction():
    metric = SegmentationMetrics(3)
    metric.update(torch.tensor([[0, 7]]), torch.tensor([[0, 255]]))
    assert metric.compute()["confusion"].sum() == 1


@pytest.mark.parametrize(
    ("preds", "target", "message"),
    [
        (torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long), "shape"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "shape"),
        (torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long), "integer"),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 3]]), r"target holds 3 .* ignore index 255"),
        (torch.tensor([[0, 5]]), torch.tensor([[0, 1]]), r"preds holds 5 .* \[0, 3\)"),
    ],
)
def test_bad_inputs_are_named(preds, target, message):
    with pytest.raises(ValueError, match=message):
        SegmentationMetrics(3).update(preds, target)


def _shard_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 4, (4, 6, 6), generator=generator)
    target = torch.randint(0, 5, (4, 6, 6), generator=generator)
    target[target == 4] = 255
    return preds, target


def _synced_confusion(
    rank: int, world_size: int, store: str, out: str | None = None
) -> torch.Tensor:
    """Rank ``rank``'s confusion after the sync, over its every other image; saved if ``out``."""
    dist.init_process_group(
        "gloo",
        store=dist.FileStore(store, world_size),
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        preds, target = _shard_data()
        metric = SegmentationMetrics(4)
        metric.update(preds[rank::world_size], target[rank::world_size])
        confusion = metric.compute()["confusion"]
    finally:
        dist.destroy_process_group()
    if out is not None:
        torch.save(confusion, out)
    return confusion


def test_confusion_is_summed_across_processes(tmp_path):
    # This process is rank 0 and a spawned one rank 1, so only one new interpreter starts.
    store, out = str(tmp_path / "store"), str(tmp_path / "rank1.pt")
    other = mp.get_context("spawn").Process(target=_synced_confusion, args=(1, 2, store, out))
    other.start()
    try:
        rank0 = _synced_confusion(0, 2, store)
    finally:
        other.join(timeout=60)
    assert other.exitcode == 0

    preds, target = _shard_data()
    single = SegmentationMetrics(4)
    single.update(preds, target)
    expected = single.compute()["confusion"]
    half = SegmentationMetrics(4)
    half.update(preds[::2], target[::2])
    assert not torch.equal(half.compute()["confusion"], expected)  # the shards differ
    assert torch.equal(rank0, expected)
    assert torch.equal(torch.load(out), expected)
