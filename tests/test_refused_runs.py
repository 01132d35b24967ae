"""Bad input from the command line: one error line naming the key and the fix, exit status 1,
before any run directory, logger run or checkpoint exists."""

import os

import pytest

from tests.helpers import evaluate, run_script

REFUSED = [
    (["data=cifar10", "data.root=/nonexistent"], "error: CIFAR-10 not found: /nonexistent/"),
    (["data=imagefolder"], "error: data.root must be set (??? in the config): pass data.root=..."),
    (["data.batch_size=0"], "error: data.batch_size must be a whole number >= 1, got 0"),
    (["data.image_size=-1"], "error: data.image_size must be a whole number >= 1, got -1"),
    (["data.num_workers=-2"], "error: data.num_workers must be a whole number >= 0, got -2"),
    (["attn.reduction=0"], "error: attn.reduction must be"),
    (["attn.reduction=-4"], "error: attn.reduction must be"),
    (
        ["data.batchsize=3"],
        "error: data.batchsize is not a key of the config: did you mean data.batch_size?",
    ),
    (["color=red"], "error: color is not a key of the config: to add a key, write +color=red"),
    (["attn=sse"], "error: attn=sse is not an option: attn takes a2, aa, axial, bam, bot, caa,"),
    (["data.x=["], "error: cannot parse the override 'data.x=[' (no viable alternative at input"),
    (
        ["+head=fcn"],
        "error: head=fcn is read by task=segmentation only, and this run is task=classification: "
        "drop it, or add task=segmentation",
    ),
    (["+data.colour=1"], "error: data.colour is not a setting of visionattn.data.ShapesDataModule"),
]


@pytest.mark.parametrize(("overrides", "line"), REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_bad_input_is_one_line_before_anything_starts(overrides, line, tmp_path):
    # logger=default: a wandb run (offline) and a CSV log, neither of which may start
    result = run_script("train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}", tmp=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # no run directory, config, log or checkpoint
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("*.ckpt"))


def test_hydra_full_error_still_gives_the_trace(tmp_path):
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        result = run_script("train.py", "data.batchsize=3", tmp=tmp_path)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "data.batchsize" in result.stderr


def test_the_precision_used_is_recorded_and_a_size_bound_plugin_is_evaluated_at_its_size(
    tmp_path,
):
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", "attn=linformer", "trainer.max_epochs=1", "+trainer.max_steps=4"]
    args += ["trainer.precision=16-mixed", "logger=csv", f"hydra.run.dir={run_dir}"]
    result = run_script("train.py", *args, tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # On a CPU, Lightning runs 16-mixed as bf16 autocast: the record says what ran.
    assert "precision: bf16-mixed" in (run_dir / "config.yaml").read_text()
    assert "precision      bf16-mixed" in result.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()  # the accepted run's record
    assert not (run_dir / ".hydra" / "attempt").exists()

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    refused = run_script(
        "eval.py", f"ckpt_path={ckpt}", "+data.image_size=64", f"hydra.run.dir={tmp_path / 'e'}",
        tmp=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: linformer is built for one feature size, and this checkpoint was trained at "
        "data.image_size=32: it cannot take 64; evaluate with data.image_size=32, the training "
        "size"
    ]
    assert not (tmp_path / "e").exists()
    scores, _ = evaluate(ckpt, tmp_path / "e", "+data.image_size=32")
    assert scores["images"] == 256 and scores["precision"] == "bf16-mixed"
