"""The README's first command, ``python train.py`` with no options, keeps its promise."""

from tests.helpers import column, read_metrics, run_script


def test_the_default_run_reaches_90_percent(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script("train.py", f"hydra.run.dir={run_dir}", tmp=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = column(read_metrics(run_dir), "val/acc1")
    assert max(accuracy) >= 0.90, accuracy
    assert "resnet18_half + se on shapes" in result.stdout
    # nothing on the console that a user cannot act on
    console = result.stdout + result.stderr
    for noise in ("litlogger", "LeafSpec", "anonymous", "v_num", "Run history", "Run summary"):
        assert noise not in console, noise
    # wandb's quiet mode drops its own footer; the report says how to upload the offline run
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert f"wandb sync {offline_run}" in result.stdout
