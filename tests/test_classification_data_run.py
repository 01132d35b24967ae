"""``python train.py data=imagefolder|cifar10|webdataset ...`` and ``python eval.py`` end to end,
on small datasets written in the real formats."""

import json
import shutil
import subprocess
import sys

import pytest
from torchvision.datasets import CIFAR10

from tests.data.test_cifar import make_cifar
from tests.data.test_imagefolder import corrupt, make_imagefolder
from tests.helpers import ROOT, column, evaluate, read_metrics, run_script, script_env

# Three colour-coded classes at 16 px, one block a stage: seconds a run.
SMALL = [
    "data.image_size=16",
    "data.batch_size=8",
    "data.num_workers=0",
    "model.layers=[1,1,1,1]",
    "trainer.max_epochs=5",
    "logger=csv",
]


@pytest.fixture(scope="module")
def imagefolder_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagefolder")
    make_imagefolder(tmp / "data", per_class=16)
    run_dir = tmp / "run"
    result = run_script(
        "train.py", "data=imagefolder", f"data.root={tmp / 'data'}",  # the classes are found
        *SMALL, f"hydra.run.dir={run_dir}", tmp=tmp,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_an_imagefolder_tree_trains(imagefolder_run):
    config = (imagefolder_run / "config.yaml").read_text()
    assert "num_classes: 3" in config  # found in the tree, recorded for eval.py
    rows = read_metrics(imagefolder_run)
    acc1 = column(rows, "val/acc1")
    assert len(acc1) == 5 and max(acc1) > 1 / 3 + 0.4  # three classes
    losses = column(rows, "train/loss_epoch")
    assert losses[-1] < losses[0]


def test_eval_maps_labels_as_training_did_after_the_data_moved(imagefolder_run, tmp_path):
    ckpt = imagefolder_run / "checkpoints" / "best.ckpt"
    best = max(column(read_metrics(imagefolder_run), "val/acc1"))
    same, _ = evaluate(ckpt, tmp_path)
    assert same["acc1"] == pytest.approx(best, abs=1e-6)
    # Moved, without "cat": sorted folders would label dog 0 and emu 1, the model says 1 and 2.
    moved = tmp_path / "moved"
    for name in ("dog", "emu"):
        shutil.copytree(imagefolder_run.parent / "data" / "val" / name, moved / "val" / name)
    scores, _ = evaluate(ckpt, tmp_path, f"data.root={moved}")
    assert scores["images"] == 32
    assert scores["acc1"] > 0.8  # shifted by one, every label would be wrong


def test_unreadable_images_are_skipped_counted_and_named(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=16)
    bad = corrupt(data)
    run_dir = tmp_path / "run"
    args = ["data=imagefolder", f"data.root={data}", "data.num_classes=3", *SMALL]
    result = run_script("train.py", *args, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}",
                        tmp=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert all(name in log for name in bad)
    assert "epoch 1: skipped 2 unreadable training images" in log
    assert "skipped images" in result.stdout and "4 training, 0 validation" in result.stdout
    assert column(read_metrics(run_dir), "data/skipped_train") == [2.0, 2.0]

    strict = run_script("train.py", *args, "data.strict=true", f"hydra.run.dir={tmp_path / 's'}",
                        tmp=tmp_path)  # fmt: skip
    assert strict.returncode != 0
    assert "unreadable image" in strict.stderr and "data.strict=false" in strict.stderr


def test_shards_written_by_our_command_train_and_evaluate(tmp_path):
    tree = make_imagefolder(tmp_path / "tree", per_class=16)
    shards = tmp_path / "shards"
    written = subprocess.run(
        [sys.executable, "-m", "visionattn.data.write_shards", str(tree), str(shards),
         "--shard-size", "12"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr[-3000:]
    assert len(list(shards.glob("train-*.tar"))) == 4  # 48 images, 12 a shard
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", "data=webdataset", f"data.root={shards}", "data.num_classes=3", *SMALL,
        f"hydra.run.dir={run_dir}", tmp=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    acc1 = column(read_metrics(run_dir), "val/acc1")
    assert max(acc1) > 1 / 3 + 0.4
    (tmp_path / "eval").mkdir()
    scores, _ = evaluate(run_dir / "checkpoints" / "best.ckpt", tmp_path / "eval")
    assert scores["acc1"] == pytest.approx(max(acc1), abs=1e-6) and scores["images"] == 48


def run_with_cifar_md5(md5s: dict, script: str, *args: str, tmp):
    """Runs ``script`` with torchvision's CIFAR-10 MD5 list replaced by the test files' own."""
    launcher = (
        "import json, runpy, sys; from torchvision.datasets import CIFAR10; "
        f"md5 = json.loads({json.dumps(json.dumps(md5s))}); "
        "CIFAR10.train_list, CIFAR10.test_list, CIFAR10.meta = "
        "md5['train'], md5['test'], md5['meta']; "
        f"sys.argv = [{str(ROOT / script)!r}, *sys.argv[1:]]; "
        f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, *args], cwd=ROOT, env=script_env(tmp),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cifar_trains_and_evaluates_from_its_batches(tmp_path, monkeypatch):
    make_cifar(tmp_path / "data", monkeypatch, per_batch=40, num_classes=4)
    md5s = {"train": CIFAR10.train_list, "test": CIFAR10.test_list, "meta": CIFAR10.meta}
    run_dir = tmp_path / "run"
    result = run_with_cifar_md5(
        md5s, "train.py", "data=cifar10", f"data.root={tmp_path / 'data'}", "data.num_classes=4",
        "data.batch_size=20", "data.num_workers=0", "model.layers=[1,1,1,1]",
        "trainer.max_epochs=4", "logger=csv", f"hydra.run.dir={run_dir}", tmp=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    acc1 = column(read_metrics(run_dir), "val/acc1")
    assert max(acc1) > 0.25 + 0.3
    (tmp_path / "eval").mkdir()
    scores, _ = evaluate(
        run_dir / "checkpoints" / "best.ckpt", tmp_path / "eval",
        runner=lambda *a, tmp: run_with_cifar_md5(md5s, *a, tmp=tmp),
    )  # fmt: skip
    assert scores["acc1"] == pytest.approx(max(acc1), abs=1e-6) and scores["images"] == 40
