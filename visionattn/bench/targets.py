"""The issue's targets, read off the measured tables: each names what it compares, the figure,
the limit and whether the run met it. No test times anything; a missed target shows here."""

from collections.abc import Callable
from dataclasses import dataclass

# The CCNet paper's cost of RCCA (R = 2) on a 1 x 512 x 97 x 97 map, and its memory claim.
CCNET_PAPER_GFLOPS = 16.5
# The ISA paper's efficiency setting: a 512 x 128 x 128 map (after its 3x3 conv from 2048
# channels), blocks of 8 x 8, keys of C / 2 channels, values of C.
ISA_PAPER_SHAPE = "1x512x128x128"


def isa_published_gflops(
    size: int = 128, channels: int = 512, keys: int = 256, values: int = 512, block: int = 8
) -> float:
    """The published count of ISA's cost at its paper's setting, for the layers our plugin has:
    both steps' q, k, v projections and their two attentions. The authors' module also has an
    output projection after each step and a 1x1 conv fusing [x, context] (the published total,
    386 GFLOPs, counts those and the 2048 -> 512 3x3 conv before the module); ours adds
    ``gamma`` times the context to its input instead."""
    positions = size * size
    projections = 2 * 2 * positions * channels * (2 * keys + values)
    groups, group = (size // block) ** 2, block * block
    # long range: P^2 groups of N / P^2 positions; short range: N / P^2 blocks of P^2
    attention = 2 * (keys + values) * (group * groups**2 + groups * group**2)
    return (projections + attention) / 1e9


@dataclass(frozen=True)
class Target:
    what: str
    measured: float
    limit: str
    met: bool

    def row(self) -> dict:
        return {
            "target": self.what,
            "measured": self.measured,
            "limit": self.limit,
            "met": "yes" if self.met else "MISSED",
        }


def _at_most(limit: float) -> tuple[str, Callable[[float], bool]]:
    return f"<= {limit:g}", lambda value: value <= limit


def _at_least(limit: float) -> tuple[str, Callable[[float], bool]]:
    return f">= {limit:g}", lambda value: value >= limit


def _target(what: str, measured: float, rule: tuple[str, Callable[[float], bool]]) -> Target:
    text, check = rule
    return Target(what, measured, text, check(measured))


def evaluate(results: dict[str, list[dict]]) -> list[Target]:
    """Every target whose figures are in ``results`` (the tables of the suites that ran)."""
    targets = []
    for row in results.get("model_peers", []):
        if row["library"] != "visionattn":
            targets.append(
                _target(
                    f"{row['architecture']}: training throughput, ours / {row['library']}",
                    row["train_ratio"],
                    _at_least(1.0),
                )
            )
    for row in results.get("plugin_peers", []):
        if row["library"] == "visionattn":
            targets.append(
                _target(
                    f"{row['plugin']} {row['shape']}: forward+backward latency, ours / timm",
                    row["train_ratio"],
                    _at_most(1.05),
                )
            )
    attention = {(r["plugin"], r["shape"], r["settings"]): r for r in results.get("attention", [])}
    for (plugin, shape, settings), row in attention.items():
        if plugin == "nonlocal" and shape == "1x256x64x64":
            case = f"nonlocal 1x256x64x64 ({settings or 'as configured'}) forward+backward"
            targets.append(
                _target(
                    f"{case}: peak memory, fused / explicit",
                    row["fused_train_peak_mib"] / row["explicit_train_peak_mib"],
                    _at_most(0.25),
                )
            )
            targets.append(
                _target(
                    f"{case}: latency, fused / explicit",
                    row["fused_train_ms"] / row["explicit_train_ms"],
                    _at_most(1.0),
                )
            )
    ccnet = attention.get(("ccnet", "1x512x97x97", ""))
    if ccnet:
        low, high = 0.95 * CCNET_PAPER_GFLOPS, 1.05 * CCNET_PAPER_GFLOPS
        targets.append(
            _target(
                "ccnet (RCCA, R=2) 1x512x97x97: GFLOPs (paper: 16.5)",
                ccnet["gflops"],
                (f"{low:.2f} to {high:.2f}", lambda value: low <= value <= high),
            )
        )
        reference = attention.get(("nonlocal", "1x512x97x97", "sub_sample=False"))
        if reference:
            targets.append(
                _target(
                    "ccnet 1x512x97x97 forward+backward: peak memory / non-local's "
                    "(explicit, all positions, as the paper's; the paper: 1/11)",
                    ccnet["fused_train_peak_mib"] / reference["explicit_train_peak_mib"],
                    _at_most(1 / 8),
                )
            )
            if "fused_train_rss_mib" in ccnet and "explicit_train_rss_mib" in reference:
                targets.append(
                    _target(
                        "ccnet 1x512x97x97 forward+backward: VmHWM growth in a fresh process / "
                        "non-local's (explicit, all positions)",
                        ccnet["fused_train_rss_mib"] / reference["explicit_train_rss_mib"],
                        _at_most(1 / 8),
                    )
                )
    issa = attention.get(("issa", ISA_PAPER_SHAPE, ""))
    if issa:
        published = isa_published_gflops()
        low, high = 0.9 * published, 1.1 * published
        targets.append(
            _target(
                f"issa (8x8 blocks) {ISA_PAPER_SHAPE}: GFLOPs (the published count of the "
                f"same layers: {published:.1f})",
                issa["gflops"],
                (f"{low:.1f} to {high:.1f}", lambda value: low <= value <= high),
            )
        )
    for row in results.get("loop", []):
        targets.append(
            _target(
                f"Lightning loop step / plain loop step - 1 ({row['model']}, batch "
                f"{row['batch']} at {row['image_size']} px)",
                row["overhead"],
                _at_most(0.03),
            )
        )
    return targets
