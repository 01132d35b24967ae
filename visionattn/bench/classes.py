"""How each plugin's cost grows with the map: the exponent ``a`` of ``cost ~ N^a`` (N = H x W)
fitted over the plugin grid, for the peak memory and the latency of forward+backward, beside the
class its paper claims. A plugin whose fitted exponent is above its class is flagged, with the
reason.

Small maps flatten every curve (fixed costs: the weights' gradients, kernel launches), so a
fitted exponent is a lower bound of the asymptotic one, and a flag means real growth.
"""

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class CostClass:
    """The paper's claim: ``memory ~ N^memory`` and ``time ~ N^time``."""

    label: str
    memory: float
    time: float


LINEAR = CostClass("O(N)", 1.0, 1.0)
# Each position attends along its row and column: N (H + W) = 2 N^1.5 on a square map.
CRISS_CROSS = CostClass("O(N sqrt N)", 1.5, 1.5)
# Every position against every other, with the weights never kept (a fused or chunked kernel).
GLOBAL = CostClass("O(N^2) time, O(N) memory", 1.0, 2.0)
# ISSA's two steps on blocks of fixed P x P: N^2 / P^2 + N P^2 products, O(N) weights kept.
INTERLACED = CostClass("O(N^2 / P^2) time, O(N) memory", 1.0, 2.0)

CLASSES = {
    # gates: pooled descriptors
    **dict.fromkeys(("se", "eca", "cbam", "bam", "coordatt", "gc", "gsop", "triplet"), LINEAR),
    "sk": LINEAR,
    **dict.fromkeys(("halo", "sasa", "involution", "deform"), LINEAR),  # local windows
    **dict.fromkeys(("a2", "cgnl", "efficient", "external", "fastformer", "linformer"), LINEAR),
    **dict.fromkeys(("ccnet", "axial", "caa"), CRISS_CROSS),
    **dict.fromkeys(("nonlocal", "sagan", "danet", "generalized", "aa", "bot"), GLOBAL),
    "issa": INTERLACED,
}

# How far above its class a fitted exponent may be before it is flagged: the grid's noise.
TOLERANCE = 0.25


def exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``log y`` against ``log x``; None with fewer than two sizes."""
    points = [(x, y) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    logs = [(math.log(x), math.log(y)) for x, y in points]
    return statistics.linear_regression(*zip(*logs, strict=True)).slope


def class_rows(rows: list[dict]) -> list[dict]:
    """One row a plugin and channel count of the plugin grid: claimed and fitted exponents."""
    table = []
    measured = [r for r in rows if r.get("train_ms") is not None]
    for key in dict.fromkeys((r["plugin"], r["channels"]) for r in measured):
        case = sorted(
            (r for r in measured if (r["plugin"], r["channels"]) == key),
            key=lambda r: r["positions"],
        )
        claim = CLASSES.get(key[0])
        memory = exponent([(r["positions"], r["train_peak_mib"]) for r in case])
        time = exponent([(r["positions"], r["train_ms"]) for r in case])
        kernels = sorted({k for r in case for k in str(r.get("kernel", "-")).split("+")} - {"-"})
        table.append(
            {
                "plugin": key[0],
                "channels": key[1],
                "sizes": f"{case[0]['size']}..{case[-1]['size']}",
                "paper_class": claim.label if claim else "?",
                "memory_exponent": memory,
                "time_exponent": time,
                "kernel": "+".join(kernels) or "-",
                "flag": _flag(claim, memory, time, kernels),
            }
        )
    return table


def _flag(claim: CostClass | None, memory: float | None, time: float | None, kernels) -> str:
    if claim is None:
        return "no class recorded for this plugin (visionattn/bench/classes.py)"
    above = []
    if memory is not None and memory > claim.memory + TOLERANCE:
        above.append(f"memory N^{memory:.2f} > N^{claim.memory:g}")
    if time is not None and time > claim.time + TOLERANCE:
        above.append(f"time N^{time:.2f} > N^{claim.time:g}")
    if not above:
        return ""
    if memory is None or memory <= claim.memory + TOLERANCE:
        # A plugin whose work is O(N) but whose time per position grows: caches, not the algorithm.
        reason = "time only, memory in class: time per position grows with the map on this machine"
    elif "math" in kernels and "chunked" not in kernels:
        reason = "SDPA's math kernel keeps the N x M weights"
    elif "chunked" in kernels:
        reason = "attention is chunked: an N x M tensor outside it (a bias, a mask) grows"
    else:
        reason = "see plugins.csv: no fused or chunked kernel explains it"
    return f"ABOVE: {', '.join(above)}; {reason}"
