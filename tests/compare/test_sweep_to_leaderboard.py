"""The README's two commands: a sweep of 2 plugins x 2 seeds into visionattn-compare, and the
table logged to wandb (offline)."""

import csv
import json
import subprocess
import sys

import pytest

from tests.compare.runs import write_run
from tests.helpers import ROOT, column, read_metrics, read_wandb_records, run_script, script_env


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    result = run_script(
        "train.py", "-m", "experiment=smoke", "attn=none,se", "seed=1,2", "logger=csv",
        f"hydra.sweep.dir={tmp / 'multirun'}", tmp=tmp,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def test_a_sweep_of_two_plugins_and_two_seeds_becomes_a_leaderboard(sweep):
    out = sweep / "compare"
    result = subprocess.run(
        [sys.executable, "-m", "visionattn.compare", str(sweep / "multirun"), "--out", str(out)],
        cwd=ROOT, env=script_env(sweep), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "leaderboard.csv") as f:
        rows = {r["attn"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"none", "se"}

    # each row is the mean of its seeds' last validated acc1, as their logs hold it
    runs = sorted((sweep / "multirun").glob("[0-9]*"), key=lambda p: int(p.name))
    finals = {}
    for run in runs:
        config = (run / ".hydra" / "overrides.yaml").read_text()
        attn = "se" if "attn=se" in config else "none"
        finals.setdefault(attn, []).append(column(read_metrics(run), "val/acc1")[-1])
    for attn, values in finals.items():
        assert rows[attn]["n"] == "2"
        assert float(rows[attn]["mean"]) == pytest.approx(sum(values) / 2, abs=1e-6)
        assert float(rows[attn]["mean"]) > 0.4  # learned: four shapes, 25% by chance
    se = rows["se"]
    assert se["test"] == "paired t" and se["significant"] in ("True", "False")
    assert float(se["params"]) > float(rows["none"]["params"])
    assert float(se["throughput"]) > 0 and float(se["peak_memory_mb"]) > 0
    assert "| se | 2 |" in (out / "leaderboard.md").read_text()
    assert len(list(out.glob("acc1_vs_*.png"))) == 3


def test_the_table_is_logged_to_wandb(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path / "runs" / f"none{seed}", "none", seed, 0.5 + seed / 100)
        write_run(tmp_path / "runs" / f"se{seed}", "se", seed, 0.6 + seed / 100)
    env = {**script_env(tmp_path), "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "visionattn.compare", str(tmp_path / "runs"),
         "--out", str(tmp_path / "out"), "--wandb", "visionattn-compare-test"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [run_file] = (tmp_path / "wandb_dir").glob("wandb/offline-run-*/run-*.wandb")
    records = read_wandb_records(run_file)
    # wandb writes a logged object either as one JSON value or, field by field, under nested keys
    logged: dict[str, dict] = {}
    for r in records:
        if r.HasField("history"):
            for item in r.history.item:
                if item.nested_key:
                    top, *field = item.nested_key
                    logged.setdefault(top, {})[".".join(field)] = json.loads(item.value_json)
                else:
                    logged[item.key] = json.loads(item.value_json)
    assert logged["leaderboard"]["_type"] == "table-file"
    assert logged["leaderboard"]["nrows"] == 2
    assert logged["acc1_vs_flops"]["_type"] == "image-file"
