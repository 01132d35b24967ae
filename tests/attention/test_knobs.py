"""Every plugin's knobs are checked when the model is built: a value that cannot work, or a knob
the plugin lacks, is a one-line ValueError naming ``attn.<knob>``, not a ZeroDivisionError deep
in a plugin or a run on a width-1 bottleneck.

The cases come from the plugins' signatures and configs, so a new plugin is covered as it is
registered; a few hand-written ones below keep the generated ones honest.
"""

import inspect
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import visionattn
from visionattn.attention import attention_factory, get_attention
from visionattn.attention.knobs import BACKBONE_ARGS, RULES, knobs_of
from visionattn.segmentation.heads.attention import AttentionHead

CONFIGS = Path(__file__).parents[2] / "configs" / "attn"
PLUGINS = visionattn.list_attentions()

# Integer knobs where 0 means something (no halo, a zeroth-order Taylor series): only -4 fails.
ZERO_WORKS = {"halo_size", "order"}
# Out of range for each float knob, by its meaning; a new float knob must be added here.
FLOAT_BAD: dict[str, list[float]] = {
    "kappa": [0.0, -0.2],  # a key depth ratio: positive
    "upsilon": [0.0, -0.1, 1.5],  # a share of the output channels: (0, 1]
    "gamma": [0.0, -2.0],  # eca divides by it
    "rbf_gamma": [0.0, -1e-4],  # the width of a gaussian
    "b": [float("inf"), float("nan")],  # an offset: any finite number
}


def config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))


def _annotation(name: str, knob: str) -> object:
    return inspect.signature(get_attention(name)).parameters[knob].annotation


def _is_int(annotation: object) -> bool:
    return annotation is int or annotation == int | None


def _is_int_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    return (
        isinstance(origin, type)
        and issubclass(origin, Sequence)
        and int in typing.get_args(annotation)
    )


def _cases(kind) -> list[tuple[str, str]]:
    return [
        (name, knob)
        for name in PLUGINS
        for knob in knobs_of(get_attention(name))
        if kind(name, knob)
    ]


INT_KNOBS = _cases(lambda name, knob: _is_int(_annotation(name, knob)))
LIST_KNOBS = _cases(lambda name, knob: _is_int_list(_annotation(name, knob)))
FLOAT_KNOBS = _cases(lambda name, knob: _annotation(name, knob) is float)
ALL_KNOBS = _cases(lambda name, knob: True)


def test_the_generated_cases_cover_the_zoo():
    # Not vacuous: 29 plugins, most with two or more integer knobs.
    assert len(PLUGINS) == 29
    assert len(INT_KNOBS) >= 40, INT_KNOBS
    assert {("se", "reduction"), ("ccnet", "recurrence"), ("halo", "halo_size")} <= set(INT_KNOBS)
    assert {("issa", "down_factor"), ("sk", "dilations")} <= set(LIST_KNOBS)
    assert {("aa", "kappa"), ("aa", "upsilon"), ("eca", "gamma")} <= set(FLOAT_KNOBS)


@pytest.mark.parametrize(("name", "knob"), ALL_KNOBS)
def test_every_knob_has_a_rule_by_its_meaning(name, knob):
    # A new knob name gets a rule in visionattn/attention/knobs.py, not a silent pass.
    assert knob in RULES, f"{name}: add a rule for attn.{knob} to visionattn.attention.knobs"


@pytest.mark.parametrize(("name", "knob"), FLOAT_KNOBS)
def test_every_float_knob_has_out_of_range_cases(name, knob):
    assert knob in FLOAT_BAD, f"{name}: add out-of-range values of attn.{knob} to FLOAT_BAD"


@pytest.mark.parametrize("name", PLUGINS)
def test_the_configs_defaults_and_the_signatures_defaults_pass(name):
    spec = attention_factory(config(name))
    assert spec.name == name
    cls = get_attention(name)
    params = inspect.signature(cls).parameters
    defaults = {knob: params[knob].default for knob in knobs_of(cls)}
    assert attention_factory({"name": name, **defaults}).kwargs == defaults


@pytest.mark.parametrize(("name", "knob"), INT_KNOBS)
def test_an_integer_knob_refuses_zero_and_negatives(name, knob):
    for bad in [-4] if knob in ZERO_WORKS else [0, -4]:
        with pytest.raises(ValueError, match=rf"^attn\.{knob} must be .*got {bad} \({name}: "):
            attention_factory({"name": name, knob: bad})
    for bad in (True, 2.0, "8"):  # a bool is an int to Python; 2.0 and "8" are typos
        with pytest.raises(ValueError, match=rf"^attn\.{knob} must be a"):
            attention_factory({"name": name, knob: bad})
    least = 0 if knob in ZERO_WORKS else 1
    attention_factory({"name": name, knob: least})


@pytest.mark.parametrize(("name", "knob"), LIST_KNOBS)
def test_a_list_knob_checks_each_element(name, knob):
    good = list(config(name)[knob])
    attention_factory({"name": name, knob: good})
    for bad in (0, -4, 1.5):
        with pytest.raises(ValueError, match=rf"^attn\.{knob} must be a list of .*\({name}: "):
            attention_factory({"name": name, knob: [*good[:-1], bad]})
    with pytest.raises(ValueError, match=rf"^attn\.{knob} must be a list"):
        attention_factory({"name": name, knob: good[0]})


@pytest.mark.parametrize(("name", "knob"), FLOAT_KNOBS)
def test_a_float_knob_refuses_values_out_of_its_range(name, knob):
    for bad in FLOAT_BAD[knob]:
        with pytest.raises(ValueError, match=rf"^attn\.{knob} must be a"):
            attention_factory({"name": name, knob: bad})
    attention_factory({"name": name, knob: 1})  # an int is a number


@pytest.mark.parametrize("name", PLUGINS)
def test_an_unknown_knob_is_refused_listing_the_knobs(name):
    knobs = knobs_of(get_attention(name))
    listed = ", ".join(knobs) or "none"
    with pytest.raises(ValueError, match=rf"^{name} has no knob attn\.foo; its knobs: {listed}$"):
        attention_factory({"name": name, "foo": 1})


@pytest.mark.parametrize("name", PLUGINS)
def test_what_the_backbone_passes_is_no_knob(name):
    params = inspect.signature(get_attention(name)).parameters
    for arg in sorted(BACKBONE_ARGS - {"channels"}):
        with pytest.raises(ValueError, match=rf"^attn\.{arg} is set by the backbone"):
            attention_factory({"name": name, arg: 1})
    assert set(knobs_of(get_attention(name))).isdisjoint(BACKBONE_ARGS)
    assert set(knobs_of(get_attention(name))) < set(params)


# Hand-written, so that a bug in the generation above cannot make them all pass.


def test_se_reduction_zero_is_a_clear_error_not_a_zero_division():
    with pytest.raises(ValueError) as error:
        visionattn.create_model(
            "resnet18", attn={"name": "se", "reduction": 0}, channels=(32, 64, 128, 256)
        )
    assert str(error.value) == (
        "attn.reduction must be a whole number >= 1, got 0 "
        "(se: the bottleneck is channels // reduction wide)"
    )


def test_a_negative_reduction_no_longer_builds_a_width_one_bottleneck():
    with pytest.raises(ValueError, match=r"^attn\.reduction must be a whole number >= 1, got -4"):
        visionattn.create_model("resnet18", attn={"name": "se", "reduction": -4})


def test_caa_and_sagan_reductions_that_had_no_check():
    for name, knob in (("caa", "qk_reduction"), ("caa", "reduction"), ("sagan", "reduction")):
        with pytest.raises(ValueError, match=rf"^attn\.{knob} must be a whole number >= 1"):
            attention_factory({"name": name, knob: 0})


def test_ccnet_recurrence_zero():
    with pytest.raises(ValueError, match=r"^attn\.recurrence must be a whole number >= 1, got 0"):
        attention_factory({"name": "ccnet", "recurrence": 0})


def test_heads_zero_is_refused_before_a_plugin_divides_by_it():
    for name in ("axial", "linformer", "bot", "halo", "aa", "sasa"):
        knob = "heads" if name in ("axial", "linformer") else "num_heads"
        with pytest.raises(ValueError, match=rf"^attn\.{knob} must be a whole number >= 1"):
            attention_factory({"name": name, knob: 0})


def test_aa_ratios_and_even_kernels():
    with pytest.raises(ValueError, match=r"^attn\.upsilon must be a number in \(0, 1\], got 1\.5"):
        attention_factory({"name": "aa", "upsilon": 1.5})
    with pytest.raises(ValueError, match=r"^attn\.kappa must be a number > 0, got 0"):
        attention_factory({"name": "aa", "kappa": 0})
    with pytest.raises(ValueError, match=r"^attn\.kernel_size must be an odd whole number"):
        attention_factory({"name": "aa", "kernel_size": 4})
    attention_factory({"name": "aa", "upsilon": 1.0, "kappa": 2.0})  # fully attentional


def test_null_where_the_plugin_chooses_and_nowhere_else():
    attention_factory({"name": "aa", "chunk": None})
    attention_factory({"name": "eca", "kernel_size": None})
    with pytest.raises(ValueError, match=r"^attn\.chunk must be a whole number >= 1, or null"):
        attention_factory({"name": "aa", "chunk": 0})
    with pytest.raises(ValueError, match=r"^attn\.reduction must be a whole number >= 1, got None"):
        attention_factory({"name": "se", "reduction": None})


def test_switches_take_only_bools():
    with pytest.raises(ValueError, match=r"^attn\.modulated must be true or false, got 'false'"):
        attention_factory({"name": "deform", "modulated": "false"})
    attention_factory({"name": "nonlocal", "sub_sample": False})


def test_a_misspelt_knob_lists_the_real_ones():
    with pytest.raises(ValueError, match=r"^se has no knob attn\.reducton; its knobs: reduction$"):
        attention_factory({"name": "se", "reducton": 8})
    with pytest.raises(ValueError, match=r"its knobs: reduction, recurrence$"):
        attention_factory({"name": "ccnet", "recurence": 2})


def test_an_omegaconf_config_is_checked_as_a_dict():
    # train.py hands the task a DictConfig: its lists are ListConfigs.
    attention_factory(OmegaConf.create(config("issa")))
    with pytest.raises(ValueError, match=r"^attn\.down_factor .* got \[8, 0\]"):
        attention_factory(OmegaConf.create({**config("issa"), "down_factor": [8, 0]}))


def test_the_segmentation_head_checks_its_plugin_too():
    with pytest.raises(ValueError, match=r"^attn\.recurrence must be a whole number >= 1"):
        AttentionHead(64, 3, attn={"name": "ccnet", "recurrence": 0})
