import os

import pytest
import torch

from visionattn.checkpoint import (
    CheckpointError,
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


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "object.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*object\.ckpt"):
        load_checkpoint(path)


def test_only_visionattn_classes_are_built_from_a_checkpoint_config():
    dm = instantiate_trusted({"_target_": "visionattn.data.ShapesDataModule", "train_size": 8})
    assert isinstance(dm, ShapesDataModule) and dm.train_size == 8
    for config in [
        {"_target_": "os.system", "command": "echo hi"},
        {"_target_": "visionattn.data.ShapesDataModule", "seed": {"_target_": "os.getpid"}},
        {"_target_": "visionattn.data.ShapesDataModule", "mean": [{"_target_": "os.getpid"}]},
    ]:
        with pytest.raises(CheckpointError, match="refusing to build 'os"):
            instantiate_trusted(config)


def test_a_checkpoint_without_our_config_is_named():
    with pytest.raises(CheckpointError, match=r"x\.ckpt has no run config"):
        run_config({"state_dict": {}}, "x.ckpt")
