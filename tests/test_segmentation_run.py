"""``python train.py task=segmentation`` and ``python eval.py`` end to end, as a user runs them."""

import pytest
from PIL import Image

from tests.data.test_ade20k import make_ade20k
from tests.data.test_cityscapes import make_cityscapes
from tests.data.test_voc import make_voc
from tests.helpers import column, evaluate, read_metrics, run_script

# Four classes (the background and three shapes) at 32 px, one block a stage: about 40 s.
SMALL = [
    "task=segmentation",
    "experiment=smoke",
    "data.image_size=32",
    "model.layers=[1,1,1,1]",
    "logger=csv",
]
EPOCHS = 4  # experiment=smoke


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small real run with CCNet's head, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("segmentation")
    run_dir = tmp / "run"
    result = run_script("train.py", *SMALL, "attn=ccnet", f"hydra.run.dir={run_dir}", tmp=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def evaluate_best(run_dir, tmp_path, *args):
    return evaluate(run_dir / "checkpoints" / "best.ckpt", tmp_path, *args)


def test_it_learned(run):
    run_dir, result = run
    rows = read_metrics(run_dir)
    miou = column(rows, "val/miou")
    assert len(miou) == EPOCHS
    # Predicting the background everywhere scores its share of pixels (about 0.8) in one class of
    # four: about 0.2 mIoU.
    assert max(miou) > 0.2 + 0.2
    losses = column(rows, "train/loss_epoch")
    assert losses[-1] < losses[0] - 0.2
    assert "val mIoU" in result.stdout and "ccnet (attention head)" in result.stdout


def test_eval_reproduces_the_logged_miou_and_writes_the_json(run, tmp_path):
    run_dir, _ = run
    metrics, result = evaluate_best(run_dir, tmp_path)
    best = max(column(read_metrics(run_dir), "val/miou"))
    assert metrics["miou"] == pytest.approx(best, abs=1e-6)
    for key in ("miou", "pixel_acc", "per_class_iou", "throughput", "peak_memory_mb", "params",
                "flops"):  # fmt: skip
        assert key in metrics, key
    assert list(metrics["per_class_iou"]) == ["background", "circle", "ring", "square"]
    assert metrics["per_class_iou"]["background"] > 0.5
    assert metrics["params"] == column(read_metrics(run_dir), "model/params")[0]
    assert "IoU per class" in result.stdout and "square" in result.stdout


def test_one_window_covering_the_image_equals_whole_image_inference(run, tmp_path):
    run_dir, _ = run
    whole, _ = evaluate_best(run_dir, tmp_path / "whole")
    slide, _ = evaluate_best(
        run_dir, tmp_path / "slide", "inference.mode=slide", "inference.crop=32",
        "inference.stride=32",
    )  # fmt: skip
    assert slide["miou"] == whole["miou"] and slide["inference"]["mode"] == "slide"
    # Overlapping windows and test-time augmentation run and score on the same labels.
    tta, _ = evaluate_best(
        run_dir, tmp_path / "tta", "inference.mode=slide", "inference.crop=24",
        "inference.stride=8", "inference.flip=true", "inference.scales=[0.75,1.0,1.25]",
    )  # fmt: skip
    assert tta["inference"]["scales"] == [0.75, 1.0, 1.25]
    assert tta["miou"] > 0.2 + 0.1


def test_eval_saves_coloured_overlays(run, tmp_path):
    run_dir, _ = run
    evaluate_best(run_dir, tmp_path, "overlays=3")
    saved = sorted((tmp_path / "overlays").glob("*.png"))
    assert [p.name for p in saved] == ["0000.png", "0001.png", "0002.png"]
    with Image.open(saved[0]) as image:
        assert image.size == (3 * 32, 32)  # image | prediction over it | labels


# The command on VOC; smaller models on the others.
MODELS = {
    "voc": ["model=resnet50", "attn=ccnet"],
    "cityscapes": ["model.layers=[1,1,1,1]", "head=deeplabv3"],
    "ade20k": ["model.layers=[1,1,1,1]", "attn=danet"],
}


@pytest.mark.parametrize("dataset", ["voc", "cityscapes", "ade20k"])
def test_real_dataset_layouts_train_and_evaluate(dataset, tmp_path):
    """A few steps on tiny datasets written in each layout, then eval.py with only ckpt_path
    and, the dataset having moved, data.root."""
    root = tmp_path / "data"
    {"voc": make_voc, "cityscapes": make_cityscapes, "ade20k": make_ade20k}[dataset](root)
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", "task=segmentation", f"data={dataset}", f"data.root={root}", *MODELS[dataset],
        "data.image_size=16", "data.base_size=[30,20]", "data.num_workers=0",
        "data.batch_size=2", "trainer.max_epochs=1", "logger=csv",
        f"hydra.run.dir={run_dir}", tmp=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    moved = root.rename(tmp_path / "moved")
    metrics, _ = evaluate_best(run_dir, tmp_path, f"data.root={moved}")
    assert metrics["miou"] == pytest.approx(column(read_metrics(run_dir), "val/miou")[-1])
    assert len(metrics["per_class_iou"]) == {"voc": 21, "cityscapes": 19, "ade20k": 150}[dataset]


def test_a_missing_dataset_fails_before_training_saying_what_was_expected_where(tmp_path):
    result = run_script(
        "train.py", "task=segmentation", "data=voc", f"data.root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}", tmp=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "VOC" in result.stderr and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
