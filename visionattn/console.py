"""Keeps the console to what a user can act on: Lightning's and torch's notices that say nothing
about the run (an advert, a deprecation inside Lightning's own code) are filtered out by their
exact text, so that every other message of Lightning's and torch's still shows."""

import logging
import warnings

# Lightning's rank_zero_info logs through whichever of these its rank_zero module was last pointed
# at, which depends on the order fabric and pytorch were imported in.
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropLitLoggerTip(logging.Filter):
    """Drops Lightning's advert for its litlogger package, printed at every Trainer's start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and "litlogger" in record.getMessage())


def quiet_console() -> None:
    """Install the filters; idempotent, so every entry point may call it."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        # A filter on the logger, not a handler: the record is dropped before it reaches any
        # handler, Hydra's train.log included.
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())
    # Lightning 2.6 builds torch's deprecated LeafSpec in its own pytree helper; nothing a user
    # does changes that, and a later Lightning drops it.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
