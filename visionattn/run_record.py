"""Hydra's record of a run (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``) kept only
for a run that was accepted.

Hydra writes its record before the run's own checks. A refused restart under the same name (a
changed plugin, class count or batch size) would otherwise rewrite the record of the run that
is there, so that it names settings its checkpoints were never trained with. Hydra writes into
``.hydra/attempt`` (``hydra.output_subdir`` in configs/hydra/default.yaml); an accepted run's
record replaces ``.hydra/``'s, a refused one's is deleted, with the run directory itself where
the refused attempt was all it held.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RECORD = ".hydra"
ATTEMPT = Path(RECORD) / "attempt"


def accept_record(run_dir: Path) -> None:
    """The attempt's record becomes the run's."""
    attempt = run_dir / ATTEMPT
    if not attempt.is_dir():  # hydra.output_subdir=null, or a DDP process of rank > 0
        return
    for file in attempt.iterdir():
        file.replace(run_dir / RECORD / file.name)
    attempt.rmdir()


def discard_attempt(run_dir: Path, log_file: Path | None = None) -> None:
    """Delete a refused attempt's record, and what else of the run directory it made: an empty
    ``.hydra/``, the empty ``log_file`` Hydra opened, the directory itself if that emptied it."""
    attempt = run_dir / ATTEMPT
    if not attempt.is_dir():
        return
    shutil.rmtree(attempt)
    if log_file is not None and log_file.is_file() and log_file.stat().st_size == 0:
        log_file.unlink()
    for folder in (run_dir / RECORD, run_dir):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@contextmanager
def attempt(run_dir: Path, log_file: Path) -> Iterator[None]:
    """Around an entry point's work: a refusal or failure before :func:`accept_record` leaves
    nothing of the attempt behind."""
    try:
        yield
    except BaseException:
        discard_attempt(run_dir, log_file)
        raise
