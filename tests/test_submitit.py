"""Sweeps through hydra-submitit-launcher: on SLURM a job array (checked against a stand-in
sbatch), and for real through submitit's local executor."""

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, script_env


def sweep(*args: str, tmp: Path, env: dict[str, str], timeout: float = 600):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fake_slurm(tmp_path: Path) -> dict[str, str]:
    """srun to be found, and an sbatch that keeps the script it was given and refuses it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/job.sh\nexit 1\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = script_env(tmp_path)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def test_a_sweep_on_slurm_is_one_job_array(fake_slurm, tmp_path):
    result = sweep(
        "hydra/launcher=submitit_slurm",
        "attn=se,cbam,ccnet",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.nodes=2",
        "hydra.launcher.tasks_per_node=8",
        "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.cpus_per_task=12",
        "hydra.launcher.timeout_min=1440",
        "+hydra.launcher.additional_parameters.requeue=true",
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=8",
        tmp=tmp_path,
        env=fake_slurm,
        timeout=120,
    )
    assert result.returncode != 0  # the stand-in refused it
    script = (tmp_path / "job.sh").read_text()
    for line in (
        "--array=0-2%3",  # three jobs, at most three at once
        "--nodes=2",
        "--ntasks-per-node=8",  # one task per GPU, as Lightning's SLURM environment wants
        "--gpus-per-node=8",
        "--cpus-per-task=12",
        "--partition=gpu",
        "--time=1440",
        "--signal=USR2@120",  # submitit's warning signal: requeue_signal=SIGUSR2 catches it
        "--requeue",
        "--open-mode=append",
    ):
        assert f"#SBATCH {line}\n" in script, line
    assert "srun " in script and "submitit.core._submit" in script


def test_a_requeued_job_finds_its_directory(fake_slurm, tmp_path):
    """A job submitit requeues starts from its pickle: the sweep's directory, named after the
    time the sweep started, must come out the same, or resume=auto would find nothing."""
    sweep("hydra/launcher=submitit_slurm", "attn=se,cbam", tmp=tmp_path, env=fake_slurm)
    [sweep_dir] = (tmp_path / "outputs" / "train" / "multirun").iterdir()
    time.sleep(1.1)  # a timestamp taken now would differ
    from hydra.core.utils import setup_globals

    setup_globals()  # the resolvers a job registers before it reads its config
    jobs = {}
    for path in (sweep_dir / ".submitit").glob("*.pkl"):
        with path.open("rb") as f:
            submission = pickle.load(f)
        _, _, job_num, *_ = submission.args
        jobs[job_num] = tmp_path / str(submission.function.config.hydra.sweep.dir)
    assert jobs == {0: sweep_dir, 1: sweep_dir}


def test_a_sweep_runs_through_submitit(tmp_path):
    result = sweep(
        "hydra/launcher=submitit_local",
        "attn=none,se",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "data.train_size=256",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        # One job at a time: the local executor starts a batch's jobs all at once.
        "hydra.sweeper.max_batch_size=1",
        "hydra.launcher.timeout_min=10",
        tmp=tmp_path,
        env=script_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for num, attn in enumerate(["none", "se"]):
        job_dir = tmp_path / "sweep" / str(num)
        assert OmegaConf.load(job_dir / ".hydra" / "config.yaml").attn.name == attn
        assert (job_dir / "config.yaml").is_file()
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2
