"""``python -m visionattn.bench gpu-check``, run on the CPU at small sizes: the same code the GPU
machine runs, every plugin under both autocast dtypes, the memory pair and the two resnet50s."""

import csv
import subprocess
import sys

import pytest
import torch

from visionattn.attention import list_attentions
from visionattn.bench.__main__ import main


def _rows(path):
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    args = ["gpu-check", "--device", "cpu", "--out", str(out), "--map", "2", "32", "16", "16"]
    args += ["--pair-size", "24", "--pair-channels", "32"]
    args += ["--steps", "6", "--model-batch", "4", "--image-size", "32"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return out, exit_.value.code


def test_every_plugin_runs_forward_and_backward_under_both_autocast_dtypes(checked):
    out, code = checked
    rows = _rows(out / "plugins.csv")
    plugins = [name for name in list_attentions() if name != "none"]
    assert [(r["plugin"], r["dtype"]) for r in rows] == [
        (name, dtype) for name in plugins for dtype in ("fp16", "bf16")
    ]
    failed = [(r["plugin"], r["dtype"], r["note"]) for r in rows if r["ok"] != "True"]
    assert not failed and code == 0
    assert all(float(r["train_peak_mib"]) > 0 for r in rows)
    kernels = {r["plugin"]: r["kernel"] for r in rows}
    assert kernels["se"] == "-" and kernels["nonlocal"] in ("flash", "math")


def test_the_memory_pair_puts_rcca_and_issa_below_the_explicit_non_local(checked):
    out, _ = checked
    ccnet, explicit, fused, issa = _rows(out / "pair.csv")
    assert ccnet["side"].startswith("ccnet") and "explicit" in explicit["side"]
    assert issa["side"].startswith("issa") and float(issa["peak_over_explicit_nonlocal"]) < 1
    assert float(explicit["peak_over_explicit_nonlocal"]) == 1.0
    ratio = float(ccnet["train_peak_mib"]) / float(explicit["train_peak_mib"])
    assert float(ccnet["peak_over_explicit_nonlocal"]) == pytest.approx(ratio)
    assert ratio < 1 and float(fused["train_peak_mib"]) < float(explicit["train_peak_mib"])


def test_both_resnet50s_learn_the_fixed_batch_and_are_compared(checked):
    out, _ = checked
    ours, timm = _rows(out / "training.csv")
    assert (ours["library"], timm["library"]) == ("visionattn", "timm")
    for row in (ours, timm):
        assert row["loss_fell"] == "True"
        assert float(row["last_loss"]) < float(row["first_loss"])
    ratio = float(ours["img_s"]) / float(timm["img_s"])
    assert float(ours["img_s_over_timm"]) == pytest.approx(ratio)
    report = (out / "report.md").read_text()
    assert "all checks passed" in report and "| sagan | bf16 |" in report


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_how_to_run_it():
    result = subprocess.run(
        [sys.executable, "-m", "visionattn.bench", "gpu-check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gpu-check: no CUDA device here; run it on a GPU machine, or pass --device cpu"
    ]
