"""``python train.py`` and ``python eval.py`` end to end, as a user runs them."""

import json
import re
import shlex
import subprocess
import sys

import pytest
import torch

from tests.helpers import (
    ROOT,
    column,
    evaluate,
    read_metrics,
    read_wandb_records,
    run_script,
    script_env,
)
from visionattn.checkpoint import load_checkpoint

EPOCHS = 4  # experiment=smoke


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small real run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("train")
    run_dir = tmp / "run"
    result = run_script("train.py", "experiment=smoke", f"hydra.run.dir={run_dir}", tmp=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_the_run_directory_holds_everything(run):
    run_dir, _ = run
    config = (run_dir / "config.yaml").read_text()
    assert "name: resnet18" in config and "${" not in config  # resolved
    assert (run_dir / ".hydra" / "overrides.yaml").exists()
    assert (run_dir / "train.log").exists()
    assert (run_dir / "checkpoints" / "best.ckpt").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert read_metrics(run_dir)
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_it_learned(run):
    run_dir, _ = run
    rows = read_metrics(run_dir)
    accuracy = column(rows, "val/acc1")
    assert len(accuracy) == EPOCHS
    assert max(accuracy) > 0.25 + 0.25  # four classes: chance is 0.25
    losses = column(rows, "train/loss_epoch")
    assert losses[-1] < losses[0] - 0.1


def test_it_prints_accuracy_cost_checkpoint_and_the_eval_command(run):
    run_dir, result = run
    out = result.stdout
    best = max(column(read_metrics(run_dir), "val/acc1"))
    assert f"{100 * best:.2f}% best" in out
    for label in ("val acc1", "val acc5", "throughput", "images/s", "peak memory", "MiB",
                  "parameters", "FLOPs", "checkpoint"):  # fmt: skip
        assert label in out, label
    assert f"python eval.py ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}" in out


def test_csv_and_wandb_get_the_same_keys(run):
    run_dir, _ = run
    csv_keys = set(read_metrics(run_dir)[0]) - {"step"}
    [run_file] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = read_wandb_records(run_file)
    assert any(r.HasField("exit") for r in records), "wandb never finished the run file"
    wandb_keys = {
        item.key or "/".join(item.nested_key)
        for r in records
        if r.HasField("history")
        for item in r.history.item
    }
    wandb_keys -= {"_step", "_runtime", "_timestamp", "trainer/global_step"}
    assert csv_keys == wandb_keys
    for key in ("train/loss_step", "val/loss", "val/acc1", "val/acc5", "train/lr",
                "train/throughput_epoch", "train/throughput_per_device_epoch",
                "train/step_time_epoch", "train/data_time_epoch", "train/peak_memory_mb_epoch",
                "model/params", "model/flops"):  # fmt: skip
        assert key in csv_keys, key


def test_the_checkpoint_loads_weights_only_and_carries_the_config(run):
    run_dir, _ = run
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    config = checkpoint["visionattn_config"]
    assert config["data"]["_target_"] == "visionattn.data.ShapesDataModule"
    assert config["task"]["model"]["name"] == "resnet18"
    assert checkpoint["hyper_parameters"]["attn"] == {
        "name": "se",
        "stages": "all",
        "blocks": "all",
        "reduction": 16,
    }


def test_eval_reproduces_the_logged_accuracy(run, tmp_path):
    run_dir, result = run
    [line] = [
        x.strip() for x in result.stdout.splitlines() if x.strip().startswith("python eval.py")
    ]
    args = shlex.split(line)[2:]
    output = tmp_path / "out" / "eval.json"
    evaluated = run_script(
        "eval.py", *args, f"output={output}", f"hydra.run.dir={tmp_path}", tmp=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(output.read_text())
    for key in ("acc1", "acc5", "throughput", "peak_memory_mb", "params", "flops"):
        assert key in metrics, key
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    logged = [
        r for r in read_metrics(run_dir) if r["val/acc1"] and int(r["epoch"]) == checkpoint["epoch"]
    ]
    assert metrics["acc1"] == pytest.approx(float(logged[0]["val/acc1"]), abs=1e-6)
    assert metrics["acc5"] == pytest.approx(float(logged[0]["val/acc5"]), abs=1e-6)
    assert metrics["params"] == column(read_metrics(run_dir), "model/params")[0]
    assert metrics["flops"] == column(read_metrics(run_dir), "model/flops")[0]
    assert metrics["images"] == 256 and metrics["throughput"] > 0


def test_ckpt_path_continues_a_run_at_the_next_epoch_in_another_directory(tmp_path):
    # Stopped at the end of its first epoch (256 images, 4 steps) of two.
    args = ["experiment=smoke", "data.train_size=256", "trainer.max_epochs=2", "logger=csv"]
    args += ["trainer.log_every_n_steps=1"]
    stopped_dir, resumed_dir = tmp_path / "stopped", tmp_path / "resumed"
    stopped = run_script(
        "train.py", *args, "+trainer.max_steps=4", f"hydra.run.dir={stopped_dir}", tmp=tmp_path
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    last = stopped_dir / "checkpoints" / "last.ckpt"

    result = run_script(
        "train.py", *args, f"ckpt_path={last}", f"hydra.run.dir={resumed_dir}", tmp=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = read_metrics(stopped_dir), read_metrics(resumed_dir)
    assert {int(r["epoch"]) for r in before if r["val/acc1"]} == {0}
    assert {int(r["epoch"]) for r in after if r["val/acc1"]} == {1}
    first_step = min(int(r["step"]) for r in after if r["train/loss_step"])
    assert first_step > max(int(r["step"]) for r in before if r["train/loss_step"])
    assert "2 epochs" in result.stdout

    # A longer schedule is another run: it starts from the weights.
    longer = run_script(
        "train.py",
        *args,
        f"ckpt_path={last}",
        "trainer.max_epochs=3",
        f"hydra.run.dir={tmp_path / 'longer'}",
        tmp=tmp_path,
    )
    assert longer.returncode == 1
    assert "trainer.max_epochs=2 (now 3)" in longer.stderr
    assert f"model.pretrained={last}" in longer.stderr


def test_a_sweep_runs_each_combination(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_script(
        "train.py",
        "-m",
        "attn=none,se",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "data.train_size=256",
        "logger=csv",
        f"hydra.sweep.dir={sweep_dir}",
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, attn in ((0, "none"), (1, "se")):
        assert re.search(rf"name: {attn}\n", (sweep_dir / str(job) / "config.yaml").read_text())
        assert (sweep_dir / str(job) / "checkpoints" / "last.ckpt").exists()
    params = [column(read_metrics(sweep_dir / str(job)), "model/params")[0] for job in (0, 1)]
    assert params[0] < params[1]  # the SE gates add parameters


@pytest.mark.parametrize(
    "overrides", [["attn=ccnet", "attn.recurrence=1"], ["attn=aa"]], ids=["context", "conv"]
)
def test_context_and_conv_plugins_train_from_the_command_line(overrides, tmp_path):
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", *overrides, "logger=csv", f"hydra.run.dir={run_dir}"]
    result = run_script("train.py", *args, tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = (run_dir / "config.yaml").read_text()
    assert f"name: {overrides[0].removeprefix('attn=')}" in config
    assert "recurrence: 1" in config or len(overrides) == 1
    assert max(column(read_metrics(run_dir), "val/acc1")) > 0.25 + 0.25  # chance is 0.25


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # HaloNet's 8x8 blocks on the 4x4 maps of a 32 px image's second stage.
        (
            "attn=halo",
            "halo at layer2.0: block_size 8 must divide the feature map, got 4x4; "
            "block sizes that work here: 1, 2, 4",
        ),
        (
            "model=halonet_h1",
            "halonet_h1 takes images whose sides are multiples of 256 (block size 8 on the "
            "stride-32 map), got 32x32",
        ),
    ],
    ids=["plugin", "backbone"],
)
def test_maps_a_model_cannot_take_fail_before_training(override, message, tmp_path):
    result = run_script("train.py", override, f"hydra.run.dir={tmp_path / 'run'}", tmp=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert "Traceback" not in result.stderr


def test_a_run_starts_from_pretrained_weights_and_eval_needs_only_its_checkpoint(run, tmp_path):
    run_dir, _ = run
    start = tmp_path / "start.ckpt"
    start.write_bytes((run_dir / "checkpoints" / "best.ckpt").read_bytes())
    tuned = tmp_path / "tuned"
    args = ["experiment=smoke", "trainer.max_epochs=1", f"model.pretrained={start}", "logger=csv"]
    result = run_script("train.py", *args, f"hydra.run.dir={tuned}", tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # The same first epoch as the run's own, but from its trained weights: it starts where the
    # run ended, far above where the run stood after its first epoch from scratch.
    scratch = column(read_metrics(run_dir), "val/acc1")
    [after] = column(read_metrics(tuned), "val/acc1")
    assert after > max(scratch[0] + 0.1, max(scratch) - 0.1), (scratch, after)
    start.unlink()  # eval rebuilds the model from the checkpoint alone
    scores, _ = evaluate(tuned / "checkpoints" / "last.ckpt", tmp_path)
    assert scores["acc1"] == pytest.approx(after, abs=1e-6)


def test_bad_checkpoints_fail_on_one_line_naming_the_path(tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"w": torch.randn(10_000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    missing = tmp_path / "missing.ckpt"
    for script, path in (("eval.py", missing), ("eval.py", truncated), ("train.py", missing)):
        result = run_script(
            script, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'x'}", tmp=tmp_path
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], lines


NETWORK_GUARD = """
import runpy, socket, sys
def refuse_network(event, args):
    if event == "socket.getaddrinfo" or (
        event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6)
    ):
        print(f"NETWORK {event} {args[:2]!r}", file=sys.stderr, flush=True)
sys.addaudithook(refuse_network)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_default_run_reaches_for_no_server(tmp_path):
    """wandb included: offline means no telemetry, update check or upload either."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            NETWORK_GUARD,
            "experiment=smoke",
            "trainer.max_epochs=1",
            "data.train_size=256",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env=script_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb"))
    assert "NETWORK" not in result.stderr, [x for x in result.stderr.splitlines() if "NETWORK" in x]


def test_eval_refuses_an_output_that_is_a_file_of_the_run(run, tmp_path):
    run_dir, _ = run
    best = run_dir / "checkpoints" / "best.ckpt"
    for target in (best, run_dir / "checkpoints" / "last.ckpt", run_dir / "config.yaml"):
        before = target.read_bytes()
        result = run_script(
            "eval.py",
            f"ckpt_path={best}",
            f"output={target}",
            f"hydra.run.dir={tmp_path}",
            tmp=tmp_path,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"error: output={target} is an existing file of the run (a checkpoint, config or "
            "log) and eval would replace it: give a new file, e.g. output=eval.json"
        ]
        assert target.read_bytes() == before
    folder = run_dir / "checkpoints"
    result = run_script(
        "eval.py",
        f"ckpt_path={best}",
        f"output={folder}",
        f"hydra.run.dir={tmp_path}",
        tmp=tmp_path,
    )
    assert result.returncode == 1 and "is a folder: give a file" in result.stderr
    assert not (tmp_path / "eval.json").exists()


def test_eval_replaces_its_own_earlier_result_in_the_run(run, tmp_path):
    run_dir, _ = run
    earlier = run_dir / "eval.json"
    earlier.write_text(json.dumps({"ckpt_path": "an earlier evaluation"}))
    best = run_dir / "checkpoints" / "best.ckpt"
    result = run_script(
        "eval.py",
        f"ckpt_path={best}",
        f"output={earlier}",
        f"hydra.run.dir={tmp_path}",
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(earlier.read_text())["ckpt_path"] == str(best.absolute())
    earlier.unlink()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_a_gpu_trainer_without_a_gpu_names_the_one_that_works(tmp_path, script):
    run_dir = tmp_path / "run"
    args = ["trainer=gpu", f"hydra.run.dir={run_dir}"]
    if script == "eval.py":
        args.append(f"ckpt_path={tmp_path / 'any.ckpt'}")
    result = run_script(script, *args, tmp=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: trainer.accelerator=gpu needs a CUDA GPU, and this machine has none: use "
        "trainer=cpu (or trainer=ddp_cpu for several processes), or trainer=default, which "
        "takes a GPU where there is one"
    ]
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_a_run_of_no_epochs_is_refused_before_it_starts(tmp_path, epochs):
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}", tmp=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: trainer.max_epochs must be a whole number of epochs >= 1 (the learning-rate "
        f"schedule is as long as the run), got {epochs}"
    ]
    assert not (run_dir / "config.yaml").exists()


def test_too_few_images_for_one_batch_says_what_to_set(tmp_path):
    result = run_script(
        "train.py",
        "experiment=smoke",
        "data.train_size=24",
        "data.batch_size=64",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=csv",
        tmp=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no full training batch: the training split holds fewer images than "
        "data.batch_size=64 (the last, partial batch is dropped): lower data.batch_size, or add "
        "images"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
