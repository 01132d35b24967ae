"""Segmentation scores from one confusion matrix: mIoU, pixel accuracy and their per-class parts.

The definitions are mmsegmentation's ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``):
pixels labelled ``ignore_index`` are left out; a class's IoU is intersection / union over the whole
dataset, not averaged over images; a class that is neither labelled nor predicted anywhere has no
IoU (NaN) and is left out of the mean (``nanmean``) rather than counted as 0 or 1.
"""

import torch
from torch import Tensor
from torchmetrics import Metric


def scores_from_confusion(confusion: Tensor) -> dict[str, Tensor]:
    """Scores of a (K, K) confusion matrix whose row is the true class and column the prediction.

    Returns float64 tensors:

    - ``miou``: mean of ``per_class_iou`` over the classes that have one;
    - ``macc``: mean of ``per_class_acc`` over the classes that have one;
    - ``pixel_acc``: correct pixels / labelled pixels;
    - ``per_class_iou`` (K,): TP / (TP + FP + FN), NaN for a class neither labelled nor predicted;
    - ``per_class_acc`` (K,): TP / labelled pixels of the class, NaN for a class never labelled;
    - ``confusion``: the matrix itself.

    A score with nothing to average (no labelled pixel at all) is NaN.
    """
    counts = confusion.double()
    hits = counts.diagonal()
    labelled = counts.sum(dim=1)
    predicted = counts.sum(dim=0)
    per_class_iou = hits / (labelled + predicted - hits)
    per_class_acc = hits / labelled
    return {
        "miou": per_class_iou.nanmean(),
        "macc": per_class_acc.nanmean(),
        "pixel_acc": hits.sum() / labelled.sum(),
        "per_class_iou": per_class_iou,
        "per_class_acc": per_class_acc,
        "confusion": confusion,
    }


class SegmentationMetrics(Metric):
    """Accumulates the confusion matrix of predicted against true class over every pixel seen.

    The state is that one int64 matrix, summed across processes, so a distributed evaluation gives
    the same scores as one process over all the data. :meth:`compute` returns the dict of
    :func:`scores_from_confusion`.

    Args:
        num_classes: K; labels and predictions must lie in [0, K).
        ignore_index: the label of pixels that are not scored, whatever is predicted there.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count the pixels of ``preds`` and ``target``, class indices of one shape (B, H, W)."""
        if preds.shape != target.shape:
            raise ValueError(
                f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same "
                "shape: class indices, e.g. logits.argmax(1), not logits"
            )
        if preds.is_floating_point() or target.is_floating_point():
            raise ValueError(
                f"preds ({preds.dtype}) and target ({target.dtype}) must hold integer class indices"
            )
        scored = target != self.ignore_index
        target, preds = target[scored].long(), preds[scored].long()
        k = self.num_classes
        for name, labels in (("target", target), ("preds", preds)):
            bad = (labels < 0) | (labels >= k)
            if bad.any():
                raise ValueError(
                    f"{name} holds {labels[bad][0].item()} at a labelled pixel: class indices "
                    f"lie in [0, {k}) for num_classes={k}; only the target may hold the ignore "
                    f"index {self.ignore_index}"
                )
        # Unweighted torch.bincount: PyTorch flags only the weighted form as nondeterministic on
        # CUDA (not yet checked on a GPU here).
        self.confusion += torch.bincount(k * target + preds, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, Tensor]:
        return scores_from_confusion(self.confusion)
