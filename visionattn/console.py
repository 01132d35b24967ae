"""Console lines a user cannot act on, filtered at the source, one by one: never all of a
library's messages, so that what does need attention still shows."""

import logging
import warnings


class _DropMessage(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def quiet_console() -> None:
    """Drop Lightning's advert for litlogger and the deprecation warning torch raises inside
    Lightning's own pytree code (``LeafSpec``), neither of which a user can change."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("litlogger"))
    leaf_spec = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
    warnings.filterwarnings("ignore", message=leaf_spec, category=FutureWarning)
