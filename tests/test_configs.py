"""Every option of every config group composes, builds what it names, and bad options fail early."""

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

import visionattn
from tests.helpers import CONFIGS, compose_config
from visionattn.data import ClassificationDataModule
from visionattn.segmentation.heads import get_head

GROUPS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "__pycache__")
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONFIGS / g).glob("*.yaml"))]


def test_every_group_of_the_brief_exists_with_a_default():
    expected = {"model", "attn", "data", "task", "trainer", "logger", "callbacks", "optim",
                "scheduler", "experiment", "paths", "hydra"}  # fmt: skip
    assert expected <= set(GROUPS)
    cfg = compose_config(["paths.output_dir=/tmp/x"])
    assert cfg.model.name == "resnet18" and cfg.attn.name == "se"


# Plugins whose paper defaults cannot take the 32 px shapes: they fail when the model is built,
# saying which sizes work, and build at their paper's image size.
PAPER_SIZE = {"halo": 256}  # 8 x 8 blocks; the maps of a 32 px image are 8, 4, 2 and 1 wide
# HaloNets take sides that are multiples of 32 x their block size (their stride-32 map in blocks).
MODEL_SIZE = {f"halonet_h{n}": 32 * b for n, b in enumerate((8, 8, 8, 10, 12, 14, 8, 10))}


def build_model(cfg) -> torch.nn.Module:
    return visionattn.create_model(
        attn=OmegaConf.to_container(cfg.attn),
        num_classes=3,
        **OmegaConf.to_container(cfg.model, resolve=True),
    )


# Options that only exist in the segmentation task (the task brings the head group), and datasets
# that live on disk.
SEGMENTATION = {"head", "data/voc", "data/cityscapes", "data/ade20k", "data/shapes_segmentation"}
ON_DISK = {"voc", "cityscapes", "ade20k", "cifar10", "cifar100", "imagefolder", "imagenet"}
ON_DISK |= {"webdataset"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option, tmp_path):
    overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}"]
    if group in SEGMENTATION or f"{group}/{option}" in SEGMENTATION:
        overrides.append("task=segmentation")
    if group == "data" and option in ON_DISK:
        overrides.append(f"data.root={tmp_path}")
    if group == "data" and option in ("imagefolder", "webdataset"):
        overrides.append("data.num_classes=3")  # the tree's; these configs require it
    cfg = compose_config(overrides)
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group == "model":
        if option in MODEL_SIZE:
            with pytest.raises(ValueError, match=f"multiples of {MODEL_SIZE[option]}"):
                build_model(cfg)
            cfg = compose_config([f"model={option}", f"data.image_size={MODEL_SIZE[option]}"])
        model = build_model(cfg)
        assert model.get_classifier().out_features == 3
    if group == "attn" and option != "none":
        # As `python train.py attn=<option>` builds it: the default model on the default data.
        if option in PAPER_SIZE:
            with pytest.raises(ValueError, match="sizes that work here"):
                build_model(cfg)
            cfg = compose_config([f"{group}={option}", f"data.image_size={PAPER_SIZE[option]}"])
        model = build_model(cfg)
        assert any(getattr(m, "kind", None) for m in model.modules())
    if group == "data":
        data = instantiate(cfg.data)
        if isinstance(data, ClassificationDataModule):  # classes are read from disk in setup()
            assert data.expected_classes == cfg.data.num_classes
        else:
            assert data.num_classes == cfg.data.num_classes
    if group == "head":
        task = instantiate(cfg.task)
        assert isinstance(task.model.decode_head, get_head(option))
    if group in ("callbacks", "logger"):
        built = [instantiate(c) for c in (cfg[group] or {}).values()]
        assert all(not isinstance(b, dict) for b in built)


def test_overrides_reach_the_objects_they_configure(tmp_path):
    cfg = compose_config(
        [
            "model=resnet50",
            "attn=se",
            "data.batch_size=16",
            "trainer.max_epochs=2",
            "attn.reduction=8",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert cfg.data.batch_size == 16 and cfg.trainer.max_epochs == 2
    task = instantiate(cfg.task)
    assert task.hparams.model["name"] == "resnet50"
    assert task.model.layer1[0].attn.fc1.out_channels == 256 // 8
    assert instantiate(cfg.data).batch_size == 16
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.max_epochs == 2


def test_the_task_is_built_from_plain_data():
    """What lets checkpoints load with weights_only=True."""
    cfg = compose_config(["paths.output_dir=/tmp/x"])
    hparams = instantiate(cfg.task).hparams
    plain = (dict, list, str, int, float, bool, type(None))

    def check(value):
        assert isinstance(value, plain), type(value)
        for v in (
            value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        ):
            check(v)

    check(dict(hparams))


def test_an_unknown_option_lists_the_valid_ones():
    with pytest.raises(MissingConfigException, match="attn/sse"):
        compose_config(["attn=sse"])


def test_eval_config_needs_only_a_checkpoint():
    cfg = compose_config(["ckpt_path=x.ckpt", "paths.output_dir=/tmp/x"], name="eval")
    assert cfg.ckpt_path == "x.ckpt" and cfg.output is None


def test_wandb_is_offline_unless_the_user_asks(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_config(["paths.output_dir=/tmp/x"]).logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_config(["paths.output_dir=/tmp/x"]).logger.wandb.mode == "online"
    online = compose_config(["paths.output_dir=/tmp/x", "logger.wandb.mode=online"])
    assert online.logger.wandb.mode == "online"
