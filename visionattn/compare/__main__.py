"""``visionattn-compare RUN_OR_SWEEP_DIR... --out DIR``: the runs of a sweep as a leaderboard.

    python train.py -m attn=none,se,cbam,ccnet seed=1,2,3 hydra.sweep.dir=multirun/study
    visionattn-compare multirun/study --out compare/study

writes ``DIR/leaderboard.csv``, ``DIR/leaderboard.md`` and one PNG a cost axis; ``--wandb
PROJECT`` logs the table and the plots to wandb as well (offline with ``WANDB_MODE=offline``).
"""

import argparse
import sys
from pathlib import Path

from visionattn.compare.leaderboard import COLUMNS, CompareError, Leaderboard, collect, tabulate
from visionattn.compare.plots import plot
from visionattn.compare.tables import markdown, write_csv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="visionattn-compare",
        description="Put the runs of a sweep side by side: one row a plugin, its seeds' mean "
        "with a 95%% interval, its difference from attn=none with a test, its cost card.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, required=True, help="directory for the files")
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="a Hydra group (model, data) or config key (data.batch_size) in which runs may "
        "differ: one table a value; repeatable",
    )
    parser.add_argument("--wandb", metavar="PROJECT", help="log the table to this wandb project")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs, skipped = collect(args.runs)
    for line in skipped:
        print(f"left out: {line}", file=sys.stderr)
    try:
        board = tabulate(runs, skipped, by=args.by)
    except CompareError as e:
        sys.exit(f"visionattn-compare: {e}")
    if args.out.exists() and not args.out.is_dir():
        sys.exit(f"visionattn-compare: --out {args.out} is a file; name a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(board, args.out / "leaderboard.csv")
    text = markdown(board)
    (args.out / "leaderboard.md").write_text(text)
    plots = plot(board, args.out)
    if args.wandb:
        log_to_wandb(board, plots, args.wandb)
    for note in board.notes:
        print(f"note: {note}", file=sys.stderr)
    print(text)
    print(f"wrote {args.out / 'leaderboard.csv'}, {args.out / 'leaderboard.md'} and", end=" ")
    print(", ".join(p.name for p in plots))


def log_to_wandb(board: Leaderboard, plots: list[Path], project: str) -> None:
    import wandb

    columns = [*board.by, "metric", *COLUMNS]
    rows = [{"metric": board.metric, **row.record()} for row in board.rows]
    run = wandb.init(
        project=project,
        job_type="compare",
        config={"metric": board.metric, "by": board.by, "runs": sum(r["n"] for r in rows)},
    )
    table = wandb.Table(columns=columns, data=[[_cell(r[c]) for c in columns] for r in rows])
    run.log({"leaderboard": table, **{p.stem: wandb.Image(str(p)) for p in plots}})
    run.finish()


def _cell(value: object) -> object:
    # wandb's table columns take one type each: the blank cells of the baseline become None
    if isinstance(value, float) and value != value:
        return None
    return None if value == "" else value


if __name__ == "__main__":
    main()
