import logging
import warnings

from lightning.pytorch.utilities.rank_zero import rank_zero_info

from visionattn.console import quiet_console


def test_the_litlogger_tip_alone_is_dropped(caplog):
    quiet_console()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger](...)")
        rank_zero_info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_the_pytree_deprecation_inside_lightning_is_dropped():
    from lightning.pytorch.utilities._pytree import _tree_flatten

    quiet_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_console()  # catch_warnings restores the filters on exit, so set them inside
        _tree_flatten(1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    # Only Lightning's own warning is dropped: the same text from elsewhere still shows.
    assert [str(w.message) for w in caught] == ["`isinstance(treespec, LeafSpec)` is deprecated"]
