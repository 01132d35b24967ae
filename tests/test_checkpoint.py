import copy
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.helpers import run_script
from visionattn.callbacks import CONFIG_KEY
from visionattn.checkpoint import (
    CheckpointError,
    check_resume,
    check_world_size,
    instantiate_trusted,
    load_checkpoint,
    run_config,
)
from visionattn.data import ShapesDataModule


def test_a_plain_checkpoint_loads(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 3 and torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))


def test_missing_truncated_and_foreign_files_fail_on_one_line_naming_the_path(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.randn(1000)}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:500])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path, reason in [
        (tmp_path / "missing.ckpt", "checkpoint not found"),
        (truncated, "cannot read checkpoint"),
        (text, "not a torch.save zip archive"),
    ]:
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        message = str(error.value)
        assert reason in message and str(path) in message and "\n" not in message


class _RunsCode:
    """Unpickling this calls a function: what a malicious checkpoint would hold."""

    def __reduce__(self):
        return (os.getpid, ())


@pytest.mark.parametrize(("payload", "name"), [(_RunsCode(), "posix.getpid"), (print, "print")])
def test_pickled_code_is_refused_naming_the_object_and_never_advising_the_unsafe_load(
    tmp_path, payload, name
):
    path = tmp_path / "object.ckpt"
    torch.save({"state_dict": {}, "payload": payload}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"refusing checkpoint {path}: it holds a {name} object")
    assert "weights_only=False" not in message and "\n" not in message


def test_a_folder_given_as_checkpoint_lists_the_checkpoints_in_it(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for name in ("best.ckpt", "last.ckpt"):
        torch.save({}, tmp_path / "checkpoints" / name)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    assert str(error.value) == (
        f"checkpoint {tmp_path} is a folder, not a file; the checkpoints in it: "
        "checkpoints/best.ckpt, checkpoints/last.ckpt"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"is a folder, not a file; it holds no \.ckpt file"):
        load_checkpoint(tmp_path / "empty")


def test_only_visionattn_classes_of_the_expected_base_are_built_from_a_checkpoint_config():
    dm = instantiate_trusted(
        {"_target_": "visionattn.data.ShapesDataModule", "train_size": 8}, L.LightningDataModule
    )
    assert isinstance(dm, ShapesDataModule) and dm.train_size == 8
    for config, reason in [
        ({"_target_": "os.system", "command": "echo hi"}, "only visionattn.* classes"),
        # Names under visionattn. that resolve, through attributes, to what is not ours.
        ({"_target_": "visionattn.report.os.system", "command": "echo hi"}, "posix.system"),
        ({"_target_": "visionattn.checkpoint.torch.load", "f": "x"}, "not a LightningDataModule"),
        ({"_target_": "visionattn.checkpoint.instantiate"}, "not a LightningDataModule"),
        ({"_target_": "visionattn.data.datamodule.L.LightningDataModule"}, "lightning."),
        ({"_target_": "visionattn.data.datamodule.DataLoader", "dataset": []}, "torch.utils"),
        ({"_target_": "visionattn.checkpoint.CheckpointError"}, "not a LightningDataModule"),
        # Ours, but not what is being built here.
        ({"_target_": "visionattn.tasks.ClassificationTask"}, "not a LightningDataModule"),
        ({"_target_": "visionattn.nothing.here"}, "no such class"),
        ({"_target_": "visionattn..data"}, "no such class"),
        # A class of ours at the top, something else inside it.
        (
            {"_target_": "visionattn.data.ShapesDataModule", "seed": {"_target_": "os.getpid"}},
            "at seed",
        ),
        (
            {
                "_target_": "visionattn.data.ShapesDataModule",
                "mean": [{"_target_": "visionattn.data.ShapesDataModule"}],
            },
            r"at mean\[0\]",
        ),
        ({"train_size": 8}, "names no LightningDataModule"),
    ]:
        with pytest.raises(CheckpointError, match=reason) as error:
            instantiate_trusted(config, L.LightningDataModule)
        assert "\n" not in str(error.value)


def test_a_crafted_checkpoint_given_to_eval_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    for target in ("visionattn.report.os.system", "visionattn.callbacks.preemption.os.system"):
        path = tmp_path / "crafted.ckpt"
        config = {"data": {"_target_": target, "command": f"touch {marker}"}, "task": {}}
        torch.save({"state_dict": {}, CONFIG_KEY: config}, path)
        result = run_script(
            "eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'eval'}", tmp=tmp_path
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"error: refusing to build {target!r} named in a checkpoint: it is posix.system, "
            "not a LightningDataModule class of visionattn"
        ]
        assert not marker.exists()


def test_a_checkpoint_without_our_config_is_named():
    with pytest.raises(CheckpointError, match=r"x\.ckpt has no run config"):
        run_config({"state_dict": {}}, "x.ckpt")


RUN = {
    "name": "mine",
    "seed": 42,
    "monitor": "val/acc1",
    "data": {
        "_target_": "visionattn.data.ShapesDataModule",
        "batch_size": 64,
        "num_workers": 0,
        "root": "/data/a",
        "image_size": 32,
    },
    "model": {"name": "resnet18", "width": 64, "pretrained": None},
    "attn": {"name": "se", "reduction": 16},
    "optim": {"name": "adamw", "lr": 1e-3},
    "scheduler": {"name": "cosine", "warmup_epochs": 1},
    "task": {
        "_target_": "visionattn.tasks.ClassificationTask",
        "label_smoothing": 0.1,
        "compile": False,
        "model": {"name": "resnet18"},
        "attn": {"name": "se"},
    },
    "trainer": {
        "max_epochs": 8,
        "accumulate_grad_batches": 1,
        "precision": "32-true",
        "devices": 1,
        "log_every_n_steps": 10,
    },
}


def changed(**edits: object) -> dict:
    """RUN with ``edits`` made, keyed by dotted names (``data__batch_size``)."""
    config = copy.deepcopy(RUN)
    for dotted, value in edits.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    return config


def test_a_resume_may_change_where_and_how_fast_but_not_what_it_trains():
    path = Path("run/last.ckpt")
    check_resume(RUN, RUN, path)
    # Where the data is, how it loads, how fast the model runs, how often it logs, when it stops.
    check_resume(
        RUN,
        changed(
            data__root="/mnt/b",
            data__num_workers=8,
            model__pretrained="x.pth",
            task__compile=True,
            trainer__log_every_n_steps=1,
            name="other",
        ),
        path,
    )
    # The processes are counted apart (check_world_size); max_steps stops a run short of its
    # schedule, whose length max_epochs sets.
    check_resume(RUN, changed(trainer__max_steps=100, trainer__devices=4), path)

    with pytest.raises(CheckpointError) as error:
        check_resume(RUN, changed(data__batch_size=32, trainer__max_epochs=16), path)
    message = str(error.value)
    assert message.startswith(f"{path} was trained with ")
    assert "data.batch_size=64 (now 32)" in message and "trainer.max_epochs=8 (now 16)" in message
    assert f"model.pretrained={path}" in message and "name=" in message and "\n" not in message

    # Another plugin is named as the option the user changed, not key by key.
    with pytest.raises(CheckpointError, match=r"with attn=se \(now eca\):"):
        check_resume(RUN, changed(attn={"name": "eca", "kernel_size": 3}), path)
    # A key the saved run did not have, the task's own settings, the seed, the optimiser.
    for edits, shown in [
        ({"data__mean": [0.5]}, "data.mean=<unset> (now [0.5])"),
        ({"task__label_smoothing": 0.0}, "task.label_smoothing=0.1 (now 0.0)"),
        ({"seed": 1}, "seed=42 (now 1)"),
        ({"optim__lr": 0.1}, "optim.lr=0.001 (now 0.1)"),
        ({"trainer__accumulate_grad_batches": 2}, "trainer.accumulate_grad_batches=1 (now 2)"),
    ]:
        with pytest.raises(CheckpointError) as error:
            check_resume(RUN, changed(**edits), path)
        assert shown in str(error.value), edits
    many = changed(
        seed=1,
        monitor="val/loss",
        data__image_size=64,
        optim__lr=1.0,
        scheduler__warmup_epochs=0,
        trainer__max_epochs=1,
        trainer__precision="bf16",
    )
    with pytest.raises(CheckpointError, match=r"and 2 more: a resumed run goes on as it began"):
        check_resume(RUN, many, path)


def test_a_resume_on_another_number_of_processes_is_refused():
    path = Path("run/last.ckpt")
    check_world_size(2, 2, path)
    check_world_size(None, 4, path)  # a checkpoint that does not say
    with pytest.raises(CheckpointError, match=r"trained on 1 process and this run has 2 "):
        check_world_size(1, 2, path)
    with pytest.raises(CheckpointError, match=r"trained on 2 processes and this run has 1 "):
        check_world_size(2, 1, path)
