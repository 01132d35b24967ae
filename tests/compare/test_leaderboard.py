"""The leaderboard of written-out runs: grouping, refusal of mixed recipes, seed statistics
against hand-computed values and scipy, bad input, the files it writes."""

import csv
import math
import os

import pytest
from scipy import stats as scipy_stats

from tests.compare.runs import COST, write_run
from visionattn.compare import CompareError, build, difference, summarize
from visionattn.compare.__main__ import main
from visionattn.compare.plots import pareto_front

NONE = {1: 0.60, 2: 0.64, 3: 0.68}
SE = {1: 0.63, 2: 0.69, 3: 0.70}


@pytest.fixture
def sweep(tmp_path):
    """A sweep of attn=none,se seed=1,2,3, as Hydra numbers its jobs."""
    root = tmp_path / "sweep"
    job = 0
    for seed in (1, 2, 3):
        for attn, values in (("none", NONE), ("se", SE)):
            cost = {"throughput": 1200.0 if attn == "none" else 1000.0 + seed}
            write_run(root / str(job), attn, seed, values[seed], cost=cost)
            job += 1
    return root


def test_mean_std_and_interval_equal_a_hand_computation(sweep):
    board = build([sweep])
    none = next(r for r in board.rows if r.attn == "none")
    # 0.60, 0.64, 0.68: mean 0.64, sample std 0.04, t(0.975, 2 dof) = 4.302653
    assert none.summary.n == 3
    assert none.summary.mean == pytest.approx(0.64)
    assert none.summary.std == pytest.approx(0.04)
    half = 4.302653 * 0.04 / math.sqrt(3)
    assert none.summary.low == pytest.approx(0.64 - half, abs=1e-6)
    assert none.summary.high == pytest.approx(0.64 + half, abs=1e-6)
    assert none.diff is None


def test_same_seeds_are_paired_and_the_test_equals_scipy(sweep):
    board = build([sweep])
    se = next(r for r in board.rows if r.attn == "se")
    # per-seed differences 0.03, 0.05, 0.02: mean 0.0333, std 0.015275, se 0.008819, t 3.7796
    d = [SE[s] - NONE[s] for s in (1, 2, 3)]
    assert se.diff.test == "paired t"
    assert se.diff.diff == pytest.approx(sum(d) / 3)
    reference = scipy_stats.ttest_rel(list(SE.values()), list(NONE.values()))
    assert se.diff.p == pytest.approx(reference.pvalue)
    assert se.diff.p == pytest.approx(2 * scipy_stats.t.sf(3.7796, 2), rel=1e-4)
    half = 4.302653 * 0.015275 / math.sqrt(3)
    assert se.diff.low == pytest.approx(sum(d) / 3 - half, abs=1e-5)
    assert se.diff.significant == (reference.pvalue < 0.05)
    # the cost card: the last epoch's figures, averaged over the seeds
    assert se.cost["throughput"] == pytest.approx(1002.0)
    assert se.cost["flops"] == COST["flops"]
    assert se.cost["peak_memory_mb"] == COST["peak_memory_mb"]


def test_other_seeds_take_welchs_test():
    plugin, baseline = {4: 0.70, 5: 0.74, 6: 0.69, 7: 0.73}, NONE
    result = difference(plugin, baseline)
    reference = scipy_stats.ttest_ind(
        list(plugin.values()), list(baseline.values()), equal_var=False
    )
    assert result.test == "Welch t"
    assert result.p == pytest.approx(reference.pvalue)
    interval = reference.confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))


def test_one_seed_has_no_interval():
    one = summarize([0.5])
    assert one.n == 1 and one.mean == 0.5
    assert math.isnan(one.std) and math.isnan(one.low)
    assert difference({1: 0.6}, {2: 0.5}).test == ""


def test_rows_are_plugins_with_the_knobs_that_differ(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path / f"none{seed}", "none", seed, 0.5)
        for reduction in (8, 16):
            knobs = {"reduction": reduction, "stages": "all"}
            write_run(tmp_path / f"se{reduction}_{seed}", "se", seed, 0.5, knobs=knobs)
        write_run(tmp_path / f"eca{seed}", "eca", seed, 0.5, knobs={"k_size": 3})
    board = build([tmp_path])
    assert sorted(r.attn for r in board.rows) == ["eca", "none", "se(reduction=16)",
                                                  "se(reduction=8)"]  # fmt: skip
    assert all(r.summary.n == 2 for r in board.rows)


def test_mixed_recipes_are_refused_naming_the_key_unless_it_is_a_column(tmp_path):
    for batch_size in (32, 64):
        for seed in (1, 2):
            for attn in ("none", "se"):
                value = 0.5 + seed / 100 + (attn == "se") / 10 + batch_size / 1000
                write_run(tmp_path / f"{attn}_{batch_size}_{seed}", attn, seed, value,
                          batch_size=batch_size)  # fmt: skip
    with pytest.raises(CompareError, match=r"data\.batch_size \(32 vs 64\).*--by data\.batch"):
        build([tmp_path])

    board = build([tmp_path], by=["data.batch_size"])
    assert list(board.tables) == [(32,), (64,)]  # numbers in their order
    for (batch_size,), rows in board.tables.items():
        assert {r.attn for r in rows} == {"none", "se"}
        se = next(r for r in rows if r.attn == "se")
        assert se.summary.mean == pytest.approx(0.515 + 0.1 + batch_size / 1000)
        assert se.diff.diff == pytest.approx(0.1)  # against the baseline of its own table


def test_runs_of_different_metrics_are_refused(tmp_path):
    write_run(tmp_path / "a", "none", 1, 0.5)
    write_run(tmp_path / "b", "none", 2, 0.3, metric="val/miou")
    with pytest.raises(CompareError, match=r"different metrics \(val/acc1 vs val/miou\)"):
        build([tmp_path])


def test_a_seed_run_twice_keeps_the_newer_run(tmp_path):
    old = write_run(tmp_path / "old", "none", 1, 0.40)
    new = write_run(tmp_path / "new", "none", 1, 0.60)
    stamp = (old / "csv/version_0/metrics.csv").stat().st_mtime
    os.utime(old / "csv/version_0/metrics.csv", (stamp - 60, stamp - 60))
    board = build([tmp_path])
    [row] = board.rows
    assert row.summary.n == 1 and row.summary.mean == pytest.approx(0.60)
    [note] = board.notes
    assert f"kept {new} (newer)" in note and str(old) in note


@pytest.mark.parametrize(
    "cut_short",
    [lambda text: text[:-3], lambda text: text[:-12] + "\n"],
    ids=["mid-value", "mid-row"],
)
def test_bad_input_is_one_line_each_and_the_rest_is_still_made(sweep, tmp_path, capsys, cut_short):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_run(tmp_path / "going" / "0", "se", 9, 0.5, epochs=4, validated=2)
    cut = write_run(tmp_path / "cut" / "0", "se", 8, 0.5)
    log = cut / "csv/version_0/metrics.csv"
    log.write_text(cut_short(log.read_text()))  # the log's writer stopped mid-write
    out = tmp_path / "out"

    main([str(sweep), str(empty), str(tmp_path / "going"), str(cut.parent), "--out", str(out)])

    err = capsys.readouterr().err.splitlines()
    assert f"left out: {empty}: no run in it" in err[0]
    assert f"{tmp_path / 'going' / '0'}: not finished (2 of 4 epochs" in err[1]
    assert f"{log}: line" in err[2] and "cut short?" in err[2]
    assert len(err) == 3
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["attn"], r["n"]) for r in rows] == [("se", "3"), ("none", "3")]
    assert "not finished" in (out / "leaderboard.md").read_text()


def test_no_finished_run_is_one_line(tmp_path, capsys):
    write_run(tmp_path / "0", "none", 1, 0.5, epochs=3, validated=1)
    with pytest.raises(SystemExit, match="no finished run"):
        main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert "not finished (1 of 3" in capsys.readouterr().err


def test_files_are_a_table_to_read_and_real_pngs(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(sweep), "--out", str(out)])
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["metric", "attn", "n"]
    assert list(rows[0])[-4:] == ["params", "flops", "throughput", "peak_memory_mb"]
    se = rows[0]
    assert se["attn"] == "se" and se["test"] == "paired t"
    assert float(se["mean"]) == pytest.approx(2.02 / 3)
    text = (out / "leaderboard.md").read_text()
    assert "| se | 3 | 67.33 | 3.79 |" in text  # in percent
    assert "model=resnet18_half" in text and "data=shapes_hard" in text
    assert text in capsys.readouterr().out
    for cost in ("flops", "throughput", "peak_memory_mb"):
        png = (out / f"acc1_vs_{cost}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_pareto_front_keeps_what_nothing_beats():
    # (cost, metric), less cost better: (3, 0.5) loses to (2, 0.6), (2, 0.6) ties nothing
    points = [(1.0, 0.4), (2.0, 0.6), (3.0, 0.5), (4.0, 0.7), (4.0, 0.65)]
    assert pareto_front(points, more_is_better=False) == [0, 1, 3]
    # more throughput better: (4, 0.7) beats every point but none
    assert pareto_front(points, more_is_better=True) == [3]
