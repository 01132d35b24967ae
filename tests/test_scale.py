"""Training at scale, end to end: data-parallel processes, preemption and resume, run folders."""

import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.helpers import (
    CONFIGS,
    ROOT,
    column,
    evaluate,
    read_metrics,
    run_script,
    script_env,
)
from visionattn.checkpoint import load_checkpoint

# 8 steps an epoch at batch 64; 250 validation images do not split into whole batches or evenly
# over 2 ranks, so a padded sampler would count some twice.
SMALL = ["experiment=smoke", "data.train_size=512", "data.val_size=251", "logger=csv"]


def test_ddp_validation_equals_one_process_and_rank_0_alone_writes(tmp_path):
    run_dir = tmp_path / "ddp"
    args = [*SMALL, "trainer=ddp_cpu", "trainer.max_epochs=2", "logger=default"]
    args += ["trainer.log_every_n_steps=1", "name=ddp"]
    args += ["+callbacks.draws._target_=tests.helpers.RankDraws"]
    result = run_script("train.py", *args, f"hydra.run.dir={run_dir}", tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Evaluate it with:") == 1  # rank 0 reports
    # Each rank its own random streams (dropout, augmentation in the training process).
    # (found anywhere in a line: rank 0's may follow a progress bar's carriage return)
    draws = {
        rank: rest for rank, *rest in re.findall(r"DRAWS (\d) (\S+) (\S+) (\S+)", result.stdout)
    }
    assert set(draws) == {"0", "1"}, result.stdout[-3000:]
    assert all(a != b for a, b in zip(draws["0"], draws["1"], strict=True)), draws

    rows = read_metrics(run_dir)
    steps = {int(r["step"]) for r in rows if r["train/loss_step"]}
    assert max(steps) < 2 * 512 // 2 // 64  # each rank trains on its half of the images
    [total, *_] = column(rows, "train/throughput_epoch")
    [per_device, *_] = column(rows, "train/throughput_per_device_epoch")
    assert 1.5 * per_device < total < 2.5 * per_device

    # The same checkpoint validated by one process: the same images once each, the same model
    # (BatchNorm statistics averaged over the ranks before validation, as saved).
    single, _ = evaluate(run_dir / "checkpoints" / "last.ckpt", tmp_path / "e")
    assert single["images"] == 251
    assert single["acc1"] == column(rows, "val/acc1")[-1]
    assert single["loss"] == pytest.approx(column(rows, "val/loss")[-1], rel=1e-5)

    # One run of each logger, one config and one log, and in the log rank 0's lines alone.
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    assert len(list(run_dir.glob("csv/version_*"))) == 1
    log = (run_dir / "train.log").read_text()
    assert "GLOBAL_RANK: 0" in log and "GLOBAL_RANK: 1" not in log


def test_ddp_segmentation_validation_counts_every_image_once(tmp_path):
    # 51 validation images over 2 ranks: a padded sampler would score one of them twice.
    run_dir = tmp_path / "ddp"
    args = ["task=segmentation", "experiment=smoke", "data.image_size=32", "model.layers=[1,1,1,1]"]
    args += ["data.train_size=64", "data.val_size=51", "trainer.max_epochs=1", "logger=csv"]
    args += ["trainer=ddp_cpu", f"hydra.run.dir={run_dir}"]
    result = run_script("train.py", *args, tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [logged] = [r for r in read_metrics(run_dir) if r["val/miou"]]

    single, _ = evaluate(run_dir / "checkpoints" / "last.ckpt", tmp_path / "e")
    assert single["images"] == 51
    # The confusion matrix's scores: each class's IoU, their mean and the pixel accuracy.
    assert single["miou"] == pytest.approx(float(logged["val/miou"]), abs=1e-6)
    assert single["pixel_acc"] == pytest.approx(float(logged["val/pixel_acc"]), abs=1e-6)
    for name, iou in single["per_class_iou"].items():
        assert iou == pytest.approx(float(logged[f"val/iou/{name}"]), abs=1e-6), name
    assert single["loss"] == pytest.approx(float(logged["val/loss"]), rel=1e-5)


def test_sync_batchnorm_on_cpu_fails_before_training(tmp_path):
    args = ["experiment=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"]
    result = run_script("train.py", *args, f"hydra.run.dir={tmp_path / 'run'}", tmp=tmp_path)
    assert result.returncode == 1
    assert "trainer.sync_batchnorm=true needs GPUs" in result.stderr
    assert "trainer=ddp_cpu" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def train_command(name: str, tmp_path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *SMALL,
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        f"name={name}",
        f"hydra.run.dir={tmp_path / name}",
        "+callbacks.steps._target_=tests.helpers.StepPrinter",
        *overrides,
    ]


def signal_at_step(command: list[str], env: dict, step: int, signum: int) -> str:
    """Runs ``command``, sends it ``signum`` once it has printed ``STEP step``, and returns its
    standard output after checking that it stopped as a signalled run does (143)."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if line.startswith(f"STEP {step}"):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-3000:]
    return out


# bf16 autocast runs on CPUs too (16-mixed's scaler: tests/tasks/test_mixed_precision.py).
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_killed_and_resumed_gives_the_weights_of_a_straight_run(tmp_path, precision):
    env = script_env(tmp_path)
    overrides = [f"trainer.precision={precision}"]
    straight = subprocess.run(
        train_command("straight", tmp_path, *overrides),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert ("bfloat16 Automatic Mixed Precision" in straight.stderr) == (precision != "32-true")

    # SIGTERM from outside, somewhere in the second of three epochs (steps 9 to 16).
    command = train_command("killed", tmp_path, *overrides)
    out = signal_at_step(command, env, 10, signal.SIGTERM)
    assert "The same command continues it (resume=auto)" in out
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    stopped = load_checkpoint(last)
    assert 10 <= stopped["global_step"] < 24, stopped["global_step"]

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {last}" in resumed.stdout
    # It picked up after the last step it saved, not at the start of that epoch.
    steps = [
        int(line.split()[1]) for line in resumed.stdout.splitlines() if line.startswith("STEP")
    ]
    assert steps == list(range(stopped["global_step"] + 1, 25))

    expected = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    got = load_checkpoint(last)
    assert got["global_step"] == expected["global_step"] == 24
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    for a, b in zip(
        got["optimizer_states"][0]["state"].values(),
        expected["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_named_run_resumes_and_refuses_to_start_over_or_change_what_it_trains(tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMALL, "logger=default", "trainer.max_epochs=2", "name=mine"]
    args += [f"hydra.run.dir={run_dir}"]
    # Stopped after its first epoch (8 steps) of two: the schedule spans both.
    first = run_script("train.py", *args, "+trainer.max_steps=8", tmp=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    again = run_script("train.py", *args, tmp=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from" in again.stdout and "(epoch 0, step 8)" in again.stdout
    epochs = {int(r["epoch"]) for r in read_metrics(run_dir) if r["val/acc1"]}
    assert epochs == {1}  # the newest csv version holds the second epoch alone
    # Both starts log to one wandb run: offline-run-<time>-<id>, the id the checkpoint carried.
    ids = {path.name.rsplit("-", 1)[1] for path in run_dir.glob("wandb/offline-run-*")}
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2 and len(ids) == 1

    fresh = run_script("train.py", *args, "resume=false", tmp=tmp_path)
    assert fresh.returncode == 1
    assert f"{run_dir} already holds a run" in fresh.stderr and "resume=auto" in fresh.stderr

    # What the run is may not change under it, and a refused start leaves the run as it was,
    # Hydra's record (.hydra/) and the logs included, byte for byte.
    last = run_dir / "checkpoints" / "last.ckpt"
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for overrides, named in [
        (["attn=eca"], ["attn=se (now eca)"]),
        (["data.num_classes=3"], ["data.num_classes=4 (now 3)"]),
        (
            ["data.batch_size=32", "trainer.max_epochs=3"],
            ["data.batch_size=64 (now 32)", "trainer.max_epochs=2 (now 3)"],
        ),
        (["trainer=ddp_cpu"], ["trained on 1 process and this run has 2"]),
    ]:
        refused = run_script("train.py", *args, *overrides, tmp=tmp_path)
        assert refused.returncode == 1, overrides
        assert f"error: {last} was trained " in refused.stderr, refused.stderr[-3000:]
        assert all(text in refused.stderr for text in named), refused.stderr
        assert f"model.pretrained={last}" in refused.stderr
        if "trainer=ddp_cpu" not in overrides:  # known once the trainer counts its processes
            assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-3000:]
        now = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        if "trainer=ddp_cpu" in overrides:  # the trainer, built to count processes, logs
            now.pop(run_dir / "train.log")
            assert now == {p: b for p, b in files.items() if p != run_dir / "train.log"}
        else:
            assert now == files
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2


def run_dir_of(overrides: list[str]) -> str:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        return cfg.hydra.run.dir


def test_the_run_directory_follows_the_name_or_the_slurm_job(monkeypatch):
    assert run_dir_of(["name=r50-se"]) == "outputs/train/r50-se"
    assert re.fullmatch(r"outputs/train/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run_dir_of([]))
    # Every task of a SLURM job, and every requeue of it, shares the job's id.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert run_dir_of([]) == "outputs/train/4242"


def test_the_slurm_requeue_signal_checkpoints_and_requeues_the_job(tmp_path):
    # A stand-in for SLURM's scontrol that records how it was called.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "scontrol.args"}\n')
    scontrol.chmod(0o755)
    env = {**script_env(tmp_path), "SLURM_JOB_ID": "4242"}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    signal_at_step(train_command("requeued", tmp_path), env, 3, signal.SIGUSR1)
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    stopped = load_checkpoint(tmp_path / "requeued" / "checkpoints" / "last.ckpt")
    assert 3 <= stopped["global_step"] < 24
