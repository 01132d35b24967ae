"""The benchmark command: what it writes, that its figures are the ones the measuring functions
give, that the explicit attention it compares against is softmax(QK^T)V, that the two training
loops do the same work, and that targets are judged on the right side of their limits. Nothing
here times anything against a limit: the targets live in the tables."""

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention, ops
from visionattn.bench.__main__ import main
from visionattn.bench.loop import _loader, lightning_loop, plain_loop
from visionattn.bench.plugins import build_plugin
from visionattn.bench.targets import evaluate, isa_published_gflops
from visionattn.bench.versus import explicit_attend, explicit_attention
from visionattn.measure import attention_kernels, count_flops, count_parameters
from visionattn.models import create_model

TINY = [
    "--channels", "32", "--sizes", "8", "12", "--batch", "2",
    "--model", "resnet18", "--model-batch", "2", "--image-size", "32",
    "--peer-shape", "2", "32", "16", "16",
    "--warmup", "0", "--repeats", "1", "--min-time", "0", "--rounds", "1", "--loop-steps", "3",
]  # fmt: skip


def _read(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> Path:
    """Every suite but ``attention`` (fixed at the papers' 97x97 maps) on a tiny grid."""
    out = tmp_path_factory.mktemp("bench")
    main(["plugins", "models", "peers", "loop", "--attn", "se", "halo", *TINY, "--out", str(out)])
    return out


def test_the_command_writes_every_table_a_report_and_a_plot(bench_run):
    for table in ("plugins", "models", "model_peers", "plugin_peers", "loop", "targets"):
        assert _read(bench_run / f"{table}.csv"), table
    report = (bench_run / "report.md").read_text()
    for heading in ("## Targets", "## Side by side: whole models", "## Plugins alone"):
        assert heading in report
    assert "![plugins at C=32](plugins_c32.png)" in report
    assert "### Memory and time classes" in report
    classes = {r["plugin"]: r for r in _read(bench_run / "classes.csv")}
    assert set(classes) == {"se", "halo"} and classes["se"]["paper_class"] == "O(N)"
    assert (bench_run / "plugins_c32.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plugin_rows_hold_the_figures_of_the_plugin_attn_builds(bench_run):
    rows = {(r["plugin"], int(r["size"])): r for r in _read(bench_run / "plugins.csv")}
    assert set(rows) == {("se", 8), ("se", 12), ("halo", 8), ("halo", 12)}
    for size in (8, 12):
        se = rows["se", size]
        module = create_attention("se", 32, reduction=16)
        assert int(se["params"]) == count_parameters(module)
        flops = count_flops(module, torch.randn(1, 32, size, size))
        assert float(se["gflops"]) == pytest.approx(flops / 1e9)
        assert float(se["gmacs"]) == pytest.approx(flops / 2e9)
        assert float(se["train_ms"]) > 0 and float(se["train_peak_mib"]) > 0
    # halo's blocks of 8 do not tile 12x12: the row stays, with halo's own reason.
    assert rows["halo", 12]["train_ms"] == ""
    assert "block sizes that work here" in rows["halo", 12]["note"]
    assert rows["halo", 8]["kernel"] in ("math", "chunked", "flash", "efficient", "cudnn")


def test_model_rows_are_the_models_train_py_builds(bench_run):
    rows = {r["attn"]: r for r in _read(bench_run / "models.csv")}
    assert set(rows) == {"se", "halo"}
    # configs/attn/se.yaml: every block; the model as `model=resnet18 attn=se` makes it.
    se = create_model("resnet18", attn={"name": "se", "reduction": 16}, num_classes=1000)
    assert int(rows["se"]["params"]) == count_parameters(se)
    assert float(rows["se"]["train_img_s"]) > 0 and float(rows["se"]["infer_img_s"]) > 0


def test_peer_ratios_are_ours_over_theirs(bench_run):
    for row in _read(bench_run / "model_peers.csv"):
        ours = next(
            r
            for r in _read(bench_run / "model_peers.csv")
            if r["architecture"] == row["architecture"] and r["library"] == "visionattn"
        )
        assert float(row["train_ratio"]) == pytest.approx(
            float(ours["train_img_s"]) / float(row["train_img_s"])
        )
    libraries = {(r["architecture"], r["library"]) for r in _read(bench_run / "model_peers.csv")}
    assert ("resnet50", "torchvision") in libraries and ("seresnet50", "timm") in libraries
    plugins = {r["plugin"] for r in _read(bench_run / "plugin_peers.csv")}
    assert plugins == {"se", "eca", "cbam", "gc", "nonlocal", "sk", "coordatt", "halo"}


def test_unknown_names_fail_before_measuring_and_list_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown attention plugin 'nope'; valid: none, a2, "):
        main(["plugins", "--attn", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"unknown model 'resnet5'; valid: .*resnet50"):
        main(["models", "--model", "resnet5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["plugin"])
    assert "unknown suite plugin; valid: plugins, models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["peers", "--peer-shape", "8", "256", "32", "16"])
    assert "the peers run on square maps, got H=32 and W=16" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_explicit_attention_is_softmax_qkt_v():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    bias = torch.randn(5, 7)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True  # every query keeps one key
    reference = torch.softmax(q @ k.transpose(-2, -1) / 2.0 + bias, dim=-1) @ v
    torch.testing.assert_close(explicit_attend(q, k, v, bias), reference)
    masked = torch.softmax((q @ k.transpose(-2, -1) * 0.3).masked_fill(~mask, -1e9), -1) @ v
    torch.testing.assert_close(explicit_attend(q, k, v, mask, scale=0.3), masked)
    torch.testing.assert_close(
        explicit_attend(q, k, v, mask, scale=0.3),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3),
    )


def test_explicit_attention_swaps_the_kernel_of_the_same_block_and_restores_it():
    module = build_plugin("nonlocal", 16, 8, 8, sub_sample=False).train()
    module.out_norm.weight.data.fill_(1.0)  # not the zero-init identity
    x = torch.randn(2, 16, 8, 8)

    def step():
        return module(x)

    fused = step()
    with explicit_attention():
        assert attention_kernels(step) == []  # no scaled_dot_product_attention at all
        explicit = step()
    assert ops.attend is not explicit_attend
    assert attention_kernels(step) == ["flash"]
    torch.testing.assert_close(explicit, fused)


def test_the_plain_and_the_lightning_loop_train_the_same_way():
    def build():
        torch.manual_seed(0)
        return create_model("resnet18", num_classes=10, layers=[1, 1, 1, 1],
                            channels=[8, 8, 16, 16])  # fmt: skip

    loader = _loader(batch=4, image_size=16, steps=3, num_classes=10)
    plain_model, lightning_model = build(), build()
    plain_steps = plain_loop(plain_model, loader, torch.device("cpu"))
    lightning_steps = lightning_loop(lightning_model, loader, torch.device("cpu"))
    assert len(plain_steps) == len(lightning_steps) == 3
    for (name, a), b in zip(
        plain_model.state_dict().items(), lightning_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(plain_model.fc.weight, build().fc.weight)  # it did train


def test_targets_are_judged_on_the_right_side_of_their_limits():
    results = {
        "model_peers": [
            {"architecture": "resnet50", "library": "visionattn", "train_ratio": 1.0},
            {"architecture": "resnet50", "library": "timm", "train_ratio": 1.01},
            {"architecture": "resnet50", "library": "torchvision", "train_ratio": 0.99},
        ],
        "plugin_peers": [
            {"plugin": "se", "library": "visionattn", "shape": "s", "train_ratio": 1.05},
            {"plugin": "eca", "library": "visionattn", "shape": "s", "train_ratio": 1.06},
        ],
        "attention": [
            {"plugin": "nonlocal", "shape": "1x256x64x64", "settings": "", "fused_train_ms": 9,
             "explicit_train_ms": 10, "fused_train_peak_mib": 26, "explicit_train_peak_mib": 100},
            {"plugin": "ccnet", "shape": "1x512x97x97", "settings": "", "gflops": 17.4,
             "fused_train_peak_mib": 120},
            {"plugin": "nonlocal", "shape": "1x512x97x97", "settings": "sub_sample=False",
             "explicit_train_peak_mib": 1000},
            {"plugin": "issa", "shape": "1x512x128x128", "settings": "", "gflops": 47.0},
        ],
        "loop": [{"model": "m", "batch": 8, "image_size": 224, "overhead": 0.031}],
    }  # fmt: skip
    judged = [(t.what.split(" ")[0], t.met) for t in evaluate(results)]
    assert judged == [
        ("resnet50:", True),  # ours / timm 1.01 >= 1
        ("resnet50:", False),  # ours / torchvision 0.99
        ("se", True),  # 1.05 <= 1.05
        ("eca", False),  # 1.06
        ("nonlocal", False),  # memory 26 / 100 > 1/4
        ("nonlocal", True),  # latency 9 / 10
        ("ccnet", False),  # 17.4 GFLOPs > 16.5 + 5%
        ("ccnet", True),  # 120 / 1000 <= 1/8
        ("issa", False),  # 47.0 GFLOPs > 42.4 + 10%
        ("Lightning", False),  # 3.1% > 3%
    ]


@pytest.mark.parametrize("size", [16, 32])
def test_issa_costs_the_published_count_of_the_same_layers(size):
    """The bench's ISA target compares against this count: q, k, v of both steps
    (2 x N x C x (2 C/2 + C) multiply-adds each) and the two sparse attentions (groups of N / 64
    positions, then blocks of 64), never the dense N x N one."""
    channels = 32
    module = create_attention("issa", channels, down_factor=(8, 8), reduction=2)
    n = size * size
    long_range = 64 * (n // 64) ** 2 * (16 + 32)  # 64 groups, QK^T and AV
    short_range = (n // 64) * 64**2 * (16 + 32)
    projections = 2 * n * channels * (16 + 16 + 32)
    by_hand = 2 * (projections + long_range + short_range)
    assert by_hand == isa_published_gflops(size, channels, 16, 32, 8) * 1e9
    assert count_flops(module, torch.randn(1, channels, size, size)) == by_hand
