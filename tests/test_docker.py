"""docker/ without a Docker engine or SLURM: the Dockerfile and scripts linted, the entrypoint run
as the image runs it, and the SLURM script run against stand-ins for srun and scontrol."""

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, compose_config, script_env

DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SBATCH = DOCKER / "slurm.sbatch"


def tool(name: str) -> str:
    """A linter from the dev extra: beside this interpreter (a venv not on PATH), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[dev]'"
    return found


def entrypoint_env(tmp: Path) -> dict[str, str]:
    """The entrypoint pointed at this checkout, with this interpreter as its `python` (the
    image's is the first on its PATH)."""
    env = script_env(tmp)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["VISIONATTN_ROOT"] = str(ROOT)
    return env


def entrypoint(*args: str, tmp: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        cwd=tmp,
        env=kwargs.pop("env", None) or entrypoint_env(tmp),
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", 60),
        **kwargs,
    )


def test_the_dockerfile_lints_clean():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scripts_lint_clean():
    result = subprocess.run(
        [tool("shellcheck"), str(ENTRYPOINT), str(SBATCH)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_copies_files_that_exist_and_reach_the_context():
    """A renamed file would break `docker build`, which nothing here runs."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = re.findall(r"^COPY (.+)$", dockerfile, flags=re.MULTILINE)
    sources = [s for c in copies for s in c.split()[:-1] if not s.startswith("--")]
    assert "docker/entrypoint.sh" in sources and "configs" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # Where ENTRYPOINT (and the SLURM script) look for it is where COPY puts it.
    [workdir] = re.findall(r"^WORKDIR (/opt/\S+)$", dockerfile, flags=re.MULTILINE)
    path = f"{workdir}/docker/entrypoint.sh"
    assert f'ENTRYPOINT ["{path}"]' in dockerfile
    assert path in SBATCH.read_text()
    assert re.search(rf'root="\$\{{VISIONATTN_ROOT:-{workdir}\}}"', ENTRYPOINT.read_text())


def test_pip_cannot_replace_the_images_torch():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(
        r"^FROM pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime$",
        dockerfile,
        flags=re.MULTILINE,
    )
    installs = re.findall(r"pip install [^\\\n]*", dockerfile)
    assert len(installs) == 2
    assert all("-c /etc/pip-constraints.txt" in i for i in installs), installs
    # ... and the build checks that they did not move.
    assert "| diff /etc/pip-constraints.txt -" in dockerfile


@pytest.fixture
def fake_python(tmp_path: Path) -> dict[str, str]:
    """An environment whose `python` prints its PID and arguments, a line each, and stops."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$$" "$@"\n')
    python.chmod(0o755)
    env = entrypoint_env(tmp_path)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.parametrize("command", ["train", "eval"])
def test_train_and_eval_replace_the_shell_with_python(command, tmp_path, fake_python):
    """exec: python has the shell's PID, so SLURM's and docker's signals reach it."""
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT), command, "name=x y", "a=1"],
        cwd=tmp_path,
        env=fake_python,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert out.splitlines() == [str(process.pid), f"{ROOT / command}.py", "name=x y", "a=1"]


def test_the_repository_defaults_to_the_images(tmp_path, fake_python):
    fake_python.pop("VISIONATTN_ROOT")
    result = entrypoint("train", tmp=tmp_path, env=fake_python)
    assert result.stdout.splitlines()[1] == "/opt/visionattn/train.py"


def test_any_other_command_is_run_as_given(tmp_path):
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT), "python", "-c", "import os; print(os.getpid())"],
        cwd=tmp_path,
        env=entrypoint_env(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert out.strip() == str(process.pid)


def test_exit_statuses_come_through(tmp_path):
    assert entrypoint("sh", "-c", "exit 7", tmp=tmp_path).returncode == 7
    mistyped = entrypoint("train", "attn=no_such_plugin", tmp=tmp_path)
    assert mistyped.returncode != 0
    assert "no_such_plugin" in mistyped.stderr


def test_usage(tmp_path):
    bare = entrypoint(tmp=tmp_path)
    assert bare.returncode == 2
    assert bare.stderr.startswith("usage: train") and not bare.stdout
    helped = entrypoint("--help", tmp=tmp_path)
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: train")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict[str, str]:
    """The image's layout without Docker: the package installed from its wheel, and beside the
    entrypoint train.py and eval.py alone, no checkout and no configs/ (the image removes the
    sources it installed). The environment to run it in."""
    tmp = tmp_path_factory.mktemp("image")
    source, site, opt = tmp / "source", tmp / "site", tmp / "opt"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    for name in ("visionattn", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(source)]
    subprocess.run(build, check=True, capture_output=True)
    [wheel] = tmp.glob("visionattn-*.whl")
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    (opt / "docker").mkdir(parents=True)
    for name in ("train.py", "eval.py", "docker/entrypoint.sh"):
        shutil.copy(ROOT / name, opt / name)
    env = entrypoint_env(tmp)
    env["VISIONATTN_ROOT"], env["PYTHONPATH"] = str(opt), str(site)
    return env


def test_the_wheel_carries_every_package_and_the_configs(image, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import visionattn.configs as c; print(c.__file__)"],
        cwd=tmp_path, env=image, capture_output=True, text=True, check=True,
    )  # fmt: skip
    configs = Path(result.stdout.strip()).parent
    assert configs == Path(image["PYTHONPATH"]) / "visionattn" / "configs"
    shipped = {p.relative_to(configs) for p in configs.rglob("*.yaml")}
    assert shipped == {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml")}
    # pyproject.toml lists the packages one by one (configs/ is mapped into visionattn).
    installed = Path(image["PYTHONPATH"])
    packages = {p.parent.relative_to(installed) for p in installed.rglob("__init__.py")}
    assert packages == {
        p.parent.relative_to(ROOT) for p in (ROOT / "visionattn").rglob("__init__.py")
    } | {Path("visionattn/configs")}


def test_the_benchmark_runs_from_the_installed_package(image, tmp_path):
    args = ["plugins", "--attn", "se", "--channels", "16", "--sizes", "8", "--warmup", "0"]
    args += ["--repeats", "1", "--min-time", "0", "--out", str(tmp_path / "bench")]
    result = subprocess.run(
        [sys.executable, "-m", "visionattn.bench", *args],
        cwd=tmp_path, env=image, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "bench" / "plugins.csv").read_text().count("\nse,") == 1


@pytest.fixture(scope="module")
def trained(image, tmp_path_factory) -> Path:
    """One short run through the entrypoint of the image's layout, from another directory."""
    tmp = tmp_path_factory.mktemp("entrypoint")
    result = entrypoint(
        "train",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "data.train_size=256",
        "logger=csv",
        tmp=tmp,
        env=image,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = (tmp / "outputs" / "train").iterdir()  # under the working directory
    return run_dir


def test_train_through_the_entrypoint(trained):
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "config.yaml").is_file()


def test_eval_through_the_entrypoint(image, trained, tmp_path):
    output = tmp_path / "eval.json"
    result = entrypoint(
        "eval",
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'e'}",
        tmp=tmp_path,
        env=image,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(output.read_text())
    assert 0.0 <= scores["acc1"] <= 1.0


SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NTASKS_PER_NODE": "8",
    "SLURM_CPUS_PER_TASK": "12",
}


@pytest.fixture
def slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Stand-ins for srun and scontrol that record, in one file, what they were asked to do."""
    bin_dir, events = tmp_path / "bin", tmp_path / "events"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        """#!/bin/bash
printf '%s\\n' "$@" > "$STUB_DIR/srun.args"
if [[ -n "${STUB_RUN_UNTIL_TERM:-}" ]]; then
  trap 'echo "srun: TERM" >> "$STUB_DIR/events"; exit 143' TERM
  touch "$STUB_DIR/srun.started"
  while :; do sleep 0.05; done
fi
exit "${STUB_EXIT:-0}"
"""
    )
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho "scontrol: $*" >> "$STUB_DIR/events"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {
        **os.environ,
        **SLURM_ENV,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "STUB_DIR": str(tmp_path),
    }
    env.pop("VISIONATTN_IMAGE", None)
    env.pop("VISIONATTN_DATA", None)
    return env, events


def test_srun_starts_one_task_per_gpu_in_the_container(slurm, tmp_path):
    env, events = slurm
    env["VISIONATTN_DATA"] = "/datasets/imagenet"
    result = subprocess.run(
        ["bash", str(SBATCH), "name=r50-se", "attn=cbam"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "srun.args").read_text().splitlines()
    assert args == [
        "--cpus-per-task=12",
        f"--container-image={tmp_path}/visionattn.sqsh",
        f"--container-mounts={tmp_path}:/workspace,/datasets/imagenet:/data:ro",
        "--container-workdir=/workspace",
        "/opt/visionattn/docker/entrypoint.sh",
        "train",
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=8",
        "name=r50-se",
        "attn=cbam",
    ]
    assert not events.exists()  # it finished: nothing to requeue
    # The overrides are valid ones, and give Lightning the allocation's shape.
    cfg = compose_config(args[args.index("train") + 1 :])
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 8)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm
    assert cfg.name == "r50-se"


def test_a_failed_step_fails_the_job(slurm, tmp_path):
    env, events = slurm
    env["STUB_EXIT"] = "3"
    result = subprocess.run(["bash", str(SBATCH)], cwd=tmp_path, env=env, timeout=30)
    assert result.returncode == 3
    assert not events.exists()


def test_near_the_time_limit_it_stops_training_then_requeues(slurm, tmp_path):
    env, events = slurm
    env["STUB_RUN_UNTIL_TERM"] = "1"
    # A session of its own, so that a failure leaves no stand-in srun running.
    job = subprocess.Popen(
        ["bash", str(SBATCH)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "srun.started").exists():
            assert time.monotonic() < deadline and job.poll() is None, "srun never started"
            time.sleep(0.05)
        job.send_signal(signal.SIGUSR1)  # what SLURM sends the script (--signal=B:USR1@90)
        out, _ = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    # The tasks were told to stop, and the job requeued only once they had exited.
    assert events.read_text().splitlines() == ["srun: TERM", "scontrol: requeue 4242"]
    assert job.returncode == 143
    assert "requeueing job 4242" in out
