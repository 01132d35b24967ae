"""The plugins' knobs, checked when the model is built.

A knob is an argument of a plugin class that a config sets (``attn.reduction=8``): every keyword
of its ``__init__`` but the ones the backbone passes where it places the plugin (the channels,
``feat_size``, ``out_channels``, ``stride``). Without these checks ``attn.reduction=0`` fails
deep inside a plugin with a ZeroDivisionError, and ``attn.reduction=-4`` trains silently on a
width-1 bottleneck (``max(1, channels // -4)``); a misspelt knob would be a TypeError from the
class. Here each is a ``ValueError`` that names ``attn.<knob>`` and the values that work.

The rules go by what a knob means (a count, an odd kernel side, a fraction), keyed by its name,
so a new plugin that reuses a name is checked without an entry here. What depends on the
channels a plugin gets (heads that divide them, block sides that divide the map) the plugin
itself checks when it is built, where the channels are known.
"""

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

# Set by the backbone where it places the plugin (AttentionSpec.__call__, backbone.spatial_op),
# from the block: a config value would be overwritten, or would stand for the block's own.
BACKBONE_ARGS = frozenset({"channels", "feat_size", "out_channels", "stride"})


def _whole(value: object) -> bool:
    # bool is an int in Python: True would pass as 1 (reduction=true is a typo, not a count).
    return isinstance(value, Integral) and not isinstance(value, bool)


def _real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """What values a knob takes: ``accepts(value)``, said in words as ``works``; ``why`` tells
    what the knob does, so that the message says why the others fail."""

    accepts: Callable[[object], bool]
    works: str
    why: str = ""


def whole(minimum: int, why: str, *, odd: bool = False) -> Rule:
    """A count, a width or a side: an int (not a bool) >= ``minimum``, odd if ``odd``."""
    if odd:
        return Rule(
            lambda v: _whole(v) and v >= minimum and v % 2 == 1,
            f"an odd whole number >= {minimum}",
            why,
        )
    return Rule(lambda v: _whole(v) and v >= minimum, f"a whole number >= {minimum}", why)


def wholes(minimum: int, why: str, *, length: int | None = None, min_length: int = 1) -> Rule:
    """A list of counts or sides, each an int >= ``minimum``; ``length`` of them, or at least
    ``min_length``."""

    def accepts(value: object) -> bool:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            return False
        if len(value) != length if length is not None else len(value) < min_length:
            return False
        return all(_whole(v) and v >= minimum for v in value)

    size = f"{length}" if length is not None else f"{min_length} or more"
    return Rule(accepts, f"a list of {size} whole numbers >= {minimum}", why)


def positive(why: str) -> Rule:
    """A scale or a ratio with no upper end: a finite number > 0."""
    return Rule(lambda v: _real(v) and v > 0, "a number > 0", why)


def fraction(why: str) -> Rule:
    """A share of a whole: a number in (0, 1]; 0 would leave the plugin nothing to do."""
    return Rule(lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]", why)


def real(why: str) -> Rule:
    """An offset: any finite number."""
    return Rule(_real, "a finite number", why)


def flag(why: str) -> Rule:
    # A string "false" (a quoted YAML value) is truthy: only a real bool says what it means.
    return Rule(lambda v: isinstance(v, bool), "true or false", why)


# A knob whose values are names (a mode, a kernel, flags in a string): the plugin checks them
# against its own list and says which it has.
CHOICE = Rule(lambda v: True, "one of the plugin's names")


# By knob name, the rule and what the knob does; a plugin's docstring and config explain more.
RULES: dict[str, Rule] = {
    # counts and widths
    "reduction": whole(1, "the bottleneck is channels // reduction wide"),
    "qk_reduction": whole(1, "queries and keys are channels // qk_reduction wide"),
    "heads": whole(1, "the channels split into that many heads"),
    "num_heads": whole(1, "the channels split into that many heads"),
    "groups": whole(1, "the channels split into that many groups"),
    "group_channels": whole(1, "each generated kernel is shared by that many channels"),
    "recurrence": whole(1, "criss-cross passes with shared weights; 2 reach every position"),
    "memory_size": whole(1, "slots of the learned memories"),
    "min_key_dim": whole(1, "the least key depth per head"),
    "min_hidden": whole(1, "the least hidden width"),
    "min_width": whole(1, "the least width of the fuse layer"),
    "dim": whole(1, "the width of the features whose covariance is taken"),
    "expansion": whole(1, "outputs of the row-wise conv per covariance row"),
    "k": whole(1, "the rows the keys and values are projected to"),
    "qk_channels": whole(1, "the width of the queries and keys; null: out_channels"),
    "position_dim": whole(1, "the width of the position encoding; null: the channels"),
    "chunk": whole(1, "query rows a chunk of the attention; null chooses them"),
    "order": whole(0, "the Taylor order of the gaussian kernel"),
    # sides, strides and dilations
    "kernel_size": whole(1, "a centred kernel, so the map keeps its size", odd=True),
    "block_size": whole(1, "the side of the query blocks"),
    "halo_size": whole(0, "pixels added around each block; 0 is no halo"),
    "dilation": whole(1, "the dilation of the spatial convs"),
    "kv_stride": whole(1, "keys and values are average-pooled by this stride"),
    "down_factor": wholes(1, "the block sides (P_h, P_w) of the short-range step", length=2),
    "dilations": wholes(1, "one 3x3 branch per dilation; selecting needs two", min_length=2),
    # ratios and scales
    "kappa": positive("the key depth d_k = kappa * out_channels"),
    "upsilon": fraction("the share of the output channels that come from attention"),
    "gamma": positive("the adaptive kernel size is log2(channels) / gamma + b / gamma"),
    "b": real("the adaptive kernel size is log2(channels) / gamma + b / gamma"),
    "rbf_gamma": positive("the gaussian kernel is exp(-rbf_gamma (a - b)^2)"),
    # switches and names
    "modulated": flag("DCNv2's modulation; false is DCNv1"),
    "sub_sample": flag("2x2 max-pool of the keys and values"),
    "mode": CHOICE,
    "kernel": CHOICE,
    "attention_type": CHOICE,
}


def knobs_of(cls: type) -> list[str]:
    """The knobs of plugin class ``cls``: its keyword arguments that no backbone passes."""
    params = inspect.signature(cls).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name not in BACKBONE_ARGS]


def rule_of(cls: type, knob: str) -> Rule | None:
    """The rule for ``knob``; a knob no entry names falls back on its annotation (a count for an
    int, a switch for a bool), or goes unchecked."""
    if knob in RULES:
        return RULES[knob]
    annotation = inspect.signature(cls).parameters[knob].annotation
    if annotation is bool:
        return flag("a switch")
    if annotation is int or annotation == int | None:
        return whole(1, "a count")
    return None


def check_knobs(name: str, cls: type, kwargs: dict) -> None:
    """Refuse a knob that plugin ``name`` (class ``cls``) lacks, or a value it cannot use, with
    a one-line ValueError naming ``attn.<knob>`` and what works. ``kwargs`` are the config's
    knobs, without ``name`` and the placement keys."""
    knobs = knobs_of(cls)
    params = inspect.signature(cls).parameters
    listed = ", ".join(knobs) or "none"
    for knob, value in kwargs.items():
        if knob in BACKBONE_ARGS:
            raise ValueError(
                f"attn.{knob} is set by the backbone where {name} is placed, not by the config; "
                f"{name}'s knobs: {listed}"
            )
        if knob not in knobs:
            raise ValueError(f"{name} has no knob attn.{knob}; its knobs: {listed}")
        # null is the default of the knobs that choose for themselves (chunk, position_dim).
        if value is None and params[knob].default is None:
            continue
        rule = rule_of(cls, knob)
        if rule is None or rule.accepts(value):
            continue
        works = rule.works + (", or null" if params[knob].default is None else "")
        why = f" ({name}: {rule.why})" if rule.why else ""
        shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        raise ValueError(f"attn.{knob} must be {works}, got {shown!r}{why}")
