"""The memory-class table: fitted exponents against hand-made power laws, every plugin with a
class, a plugin above its class flagged with the reason, and the fresh-process memory figure."""

import pytest

from visionattn.attention import list_attentions
from visionattn.bench.classes import CLASSES, class_rows, exponent
from visionattn.bench.fresh import resident_growth_mib


def test_the_fitted_exponent_is_the_power_of_a_power_law():
    assert exponent([(n, 3.0 * n**1.5) for n in (256, 1024, 4096)]) == pytest.approx(1.5)
    # least squares through noisy points: 2 * N^1 and 2.2 * N^1 at alternate sizes
    noisy = [(256, 512.0), (1024, 2252.8), (4096, 8192.0)]
    assert exponent(noisy) == pytest.approx(1.0, abs=0.05)
    assert exponent([(256, 1.0)]) is None


def test_every_plugin_has_its_papers_class():
    assert set(list_attentions()) - {"none"} == set(CLASSES)


def rows(plugin, memory_power, time_power, kernel="-"):
    return [
        {
            "plugin": plugin,
            "channels": 64,
            "size": size,
            "positions": size * size,
            "train_ms": (size * size) ** time_power / 1e3,
            "train_peak_mib": (size * size) ** memory_power / 1e3,
            "kernel": kernel,
        }
        for size in (16, 32, 64)
    ]


def test_a_plugin_above_its_class_is_flagged_with_the_reason():
    table = class_rows(
        rows("sagan", 2.0, 2.0, "math") + rows("ccnet", 1.1, 1.4) + rows("se", 1.0, 1.6)
    )
    flags = {r["plugin"]: r["flag"] for r in table}
    assert flags["sagan"].startswith("ABOVE: memory N^2.00 > N^1")
    assert "math kernel keeps the N x M weights" in flags["sagan"]
    (chunked,) = class_rows(rows("bot", 1.6, 2.0, "chunked"))
    assert "attention is chunked: an N x M tensor outside it" in chunked["flag"]
    assert flags["ccnet"] == ""  # within O(N sqrt N)
    assert flags["se"].startswith("ABOVE: time N^1.60 > N^1;")
    sagan = next(r for r in table if r["plugin"] == "sagan")
    assert sagan["memory_exponent"] == pytest.approx(2.0) and sagan["sizes"] == "16..64"


def test_a_size_a_plugin_cannot_take_is_left_out_of_its_fit():
    case = rows("halo", 1.0, 1.0)
    case[1] = {**case[1], "train_ms": None, "note": "block sizes that work here: 8"}
    (row,) = class_rows(case)
    assert row["time_exponent"] == pytest.approx(1.0) and row["sizes"] == "16..64"


def test_a_fresh_process_sees_the_explicit_weights_the_fused_kernel_never_makes():
    # 1x32x64x64 without sub-sampling: the 4096 x 4096 fp32 weights are 64 MiB, kept with
    # their gradient by the explicit softmax; the fused kernel keeps none.
    fused = resident_growth_mib("nonlocal", 1, 32, 64, sub_sample=False)
    explicit = resident_growth_mib("nonlocal", 1, 32, 64, explicit=True, sub_sample=False)
    assert explicit > 128 and fused < explicit / 4
