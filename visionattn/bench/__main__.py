"""``python -m visionattn.bench [SUITE ...] [options]`` (also ``visionattn-bench``): what every
plugin and backbone costs, measured one way, written as CSV, a markdown report and PNG plots.

Suites (all by default):

- ``plugins``: each plugin alone on a grid of feature maps (``--channels``, ``--sizes``,
  ``--batch``): parameters, FLOPs and MACs, forward and forward+backward latency, peak memory;
- ``models``: whole models, ``--model`` x ``--attn`` as ``train.py model=... attn=...`` builds
  them: training and inference throughput, peak memory, parameters, FLOPs;
- ``peers``: our resnet50, mobilenetv2_100 and SE-ResNet-50 against timm's and torchvision's, and
  our se, eca, cbam, gc, nonlocal, sk, coordatt and halo against timm's modules;
- ``attention``: fused attention against the explicit softmax(QK^T)V of the same block (nonlocal
  at 1x256x64x64), criss-cross against non-local at 1x512x97x97 (the CCNet paper's case) and
  ISSA at 1x512x128x128 (the ISA paper's);
- ``loop``: Lightning's training loop against a plain PyTorch loop.

``python -m visionattn.bench gpu-check --out DIR`` is apart: the checks only a GPU answers
(autocast on every plugin, the CCNet memory pair, resnet50 bf16 against timm), see ``gpu_check``.

The report ends with the targets, met or missed. Figures are per run: compare ratios measured
in the same run, not figures of different runs.
"""

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

SUITES = ("plugins", "models", "peers", "attention", "loop")
MODEL_ATTNS = ("none", "se", "eca", "cbam", "coordatt", "gc", "nonlocal", "ccnet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m visionattn.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"any of {', '.join(SUITES)}; all when none is given",
    )
    grid = parser.add_argument_group("plugins alone")
    grid.add_argument(
        "--attn",
        nargs="+",
        help=f"plugins (default: every plugin for `plugins`, {' '.join(MODEL_ATTNS)} for `models`)",
    )
    grid.add_argument("--channels", nargs="+", type=int, default=[256, 512])
    grid.add_argument(
        "--sizes", nargs="+", type=int, default=[16, 32, 64, 97], help="feature map sides H = W"
    )
    grid.add_argument("--batch", nargs="+", type=int, default=[1])
    whole = parser.add_argument_group("whole models and peers")
    whole.add_argument("--model", nargs="+", default=["resnet50", "mobilenetv2_100"])
    whole.add_argument(
        "--model-batch",
        type=int,
        default=None,
        help="images a step (default: 64 on a GPU, 8 on a CPU)",
    )
    whole.add_argument("--image-size", type=int, default=224)
    whole.add_argument(
        "--peer-shape",
        nargs=4,
        type=int,
        default=[8, 256, 32, 32],
        metavar=("B", "C", "H", "W"),
        help="the map the plugin peers run on",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--device", default="auto", help="auto (cuda where there is one), cpu, cuda or cuda:N"
    )
    timing.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    timing.add_argument("--repeats", type=int, default=5, help="timed calls, at least")
    timing.add_argument(
        "--min-time", type=float, default=0.5, help="seconds of timed calls, at least, per figure"
    )
    timing.add_argument(
        "--rounds", type=int, default=3, help="alternations of the two sides of a ratio"
    )
    timing.add_argument("--loop-steps", type=int, default=12, help="steps an epoch in `loop`")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: outputs/bench/<date_time>)"
    )
    args = parser.parse_args(argv)
    unknown = [suite for suite in args.suites if suite not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; valid: {', '.join(SUITES)}")
    if args.peer_shape[2] != args.peer_shape[3]:
        parser.error(
            f"--peer-shape: the peers run on square maps, got H={args.peer_shape[2]} "
            f"and W={args.peer_shape[3]}"
        )
    args.suites = args.suites or list(SUITES)
    return args


def main(argv: list[str] | None = None) -> None:
    from visionattn.console import quiet_console

    quiet_console()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu-check"]:
        from visionattn.bench import gpu_check

        sys.exit(gpu_check.main(argv[1:]))
    args = parse_args(argv)
    # Imported after parsing, so --help and bad arguments answer at once.
    import torch

    from visionattn.attention import list_attentions
    from visionattn.bench import report
    from visionattn.bench.configs import check_names
    from visionattn.bench.plugins import Repeats

    plugin_attns = args.attn or list_attentions()
    model_attns = args.attn or list(MODEL_ATTNS)
    check_names(args.model, [*plugin_attns, *model_attns])
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    model_batch = args.model_batch or (64 if device.type == "cuda" else 8)
    out = args.out or Path("outputs/bench") / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    repeats = Repeats(args.warmup, args.repeats, args.min_time)
    command = "python -m visionattn.bench " + shlex.join(argv)
    started = time.perf_counter()
    results: dict[str, list[dict]] = {}
    torch.manual_seed(0)

    if "plugins" in args.suites:
        from visionattn.bench.plugins import measure_plugin

        results["plugins"] = []
        for name in plugin_attns:
            if name == "none":
                continue
            for channels in args.channels:
                for batch in args.batch:
                    for size in args.sizes:
                        row = measure_plugin(name, batch, channels, size, device, repeats)
                        results["plugins"].append(row)
                        _log(row, f"plugin {name} {batch}x{channels}x{size}x{size}", "train_ms")
    if "models" in args.suites:
        from visionattn.bench.models import measure_grid

        results["models"] = measure_grid(
            args.model, model_attns, model_batch, args.image_size, device, repeats, log=print
        )
    if "peers" in args.suites:
        from visionattn.bench import versus

        results["model_peers"] = versus.model_peers(
            model_batch, args.image_size, device, repeats, args.rounds
        )
        print("peers: models done")
        b, c, h, _ = args.peer_shape
        results["plugin_peers"] = versus.plugin_peers(b, c, h, device, repeats, args.rounds)
        print("peers: plugins done")
    if "attention" in args.suites:
        from visionattn.bench import versus

        results["attention"] = [
            versus.fused_against_explicit("nonlocal", 1, 256, 64, device, repeats, args.rounds),
            versus.fused_against_explicit(
                "nonlocal", 1, 256, 64, device, repeats, args.rounds, sub_sample=False
            ),
            versus.fused_against_explicit("ccnet", 1, 512, 97, device, repeats, args.rounds),
            versus.fused_against_explicit(
                "nonlocal", 1, 512, 97, device, repeats, args.rounds, sub_sample=False
            ),
            # the ISA paper's efficiency setting
            versus.fused_against_explicit("issa", 1, 512, 128, device, repeats, args.rounds),
        ]
        print("attention done")
    if "loop" in args.suites:
        from visionattn.bench.loop import compare_loops
        from visionattn.bench.models import build_model

        name = args.model[0]
        results["loop"] = [
            compare_loops(
                lambda: build_model(name, "none", args.image_size),
                name,
                model_batch,
                args.image_size,
                args.loop_steps,
                args.rounds,
                device,
            )
        ]
        print("loop done")

    elapsed = time.perf_counter() - started
    path = report.write(results, out, command=command, device=device, elapsed_s=elapsed)
    print(report.targets_summary(results))
    print(f"wrote {path} and its CSV and PNG files in {out}/ ({elapsed / 60:.1f} min)")


def _log(row: dict, what: str, key: str) -> None:
    if row.get("note"):
        print(f"{what}: n/a ({row['note']})")
    else:
        print(f"{what}: {row[key]:.2f} ms forward+backward, {row['train_peak_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
