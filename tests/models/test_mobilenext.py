import math

import pytest
import torch
from torch import nn

from tests.models.recorder import Recorder, recording
from visionattn import create_model
from visionattn.models.mobilenetv2 import make_divisible
from visionattn.models.mobilenext import SandglassBlock

# Decided: the reference is the authors' released code (mnext.py), whose counts were taken
# independently of this package. The paper's table (6.1 / 3.5 / 2.5 / 2.1 / 1.8 M) is printed
# beside them in the README, not tested: the code is 10.6% over it at 0.75 and 6.3% at 0.35.
AUTHORS_CODE = {
    "140": 6_126_168,
    "100": 3_535_416,
    "075": 2_766_168,
    "050": 2_152_304,
    "035": 1_913_976,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameters_are_the_authors_code():
    for width, expected in AUTHORS_CODE.items():
        assert n_params(create_model(f"mobilenext_{width}")) == expected, width


def test_ca_mobilenext_within_three_percent_of_the_paper():
    count = n_params(create_model("mobilenext_100", attn="coordatt"))
    print(f"CA-MobileNeXt-1.0: {count:,} parameters, paper 4.09M")
    assert abs(count - 4.09e6) / 4.09e6 < 0.03


def _reference_layout(inp: int, oup: int, stride: int, t: int, keep_3x3: bool):
    """The authors' four layouts: the convs as (kind, in, out, stride), and the shortcut."""
    hidden = inp // t
    if hidden < oup / 6:
        hidden = make_divisible(math.ceil(oup / 6), 16)
    dw1 = [("dw", inp, inp, 1)]
    pws = [("pw", inp, hidden, 1), ("pw", hidden, oup, 1)]
    dw2 = [("dw", oup, oup, stride)]
    if t == 2:
        return dw1 + pws + dw2, False
    if inp != oup and stride == 1 and not keep_3x3:
        return pws, False
    if inp != oup and stride == 2 and not keep_3x3:
        return pws + dw2, False
    return dw1 + pws + dw2, not keep_3x3


def _layout(block: SandglassBlock):
    convs = [
        ("dw" if m.groups > 1 else "pw", m.in_channels, m.out_channels, m.stride[0])
        for m in block.modules()
        if isinstance(m, nn.Conv2d)
    ]
    # the shortcut, seen from outside: with the last norm zeroed the block returns x or nothing
    last_norm = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    nn.init.zeros_(last_norm.weight)
    nn.init.zeros_(last_norm.bias)
    x = torch.randn(1, _in_channels(block), 4, 4)
    with torch.no_grad():
        out = block.eval()(x)
    return convs, bool(out.abs().sum() > 0)


def _in_channels(block: SandglassBlock) -> int:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels


@pytest.mark.parametrize(
    "inp, oup, stride, t, keep_3x3",
    [
        (32, 96, 2, 2, False),  # the first block: all four layers, no shortcut
        (96, 144, 1, 6, True),  # keep_3x3
        (144, 192, 2, 6, False),  # the 1x1s and the strided depthwise conv
        (288, 384, 1, 6, False),  # the 1x1s only
        (192, 192, 1, 6, False),  # same width: all four and the shortcut
        (960, 1280, 1, 6, True),
    ],
)
def test_the_four_sandglass_layouts(inp, oup, stride, t, keep_3x3):
    block = SandglassBlock(inp, oup, stride, t, keep_3x3)
    assert _layout(block) == _reference_layout(inp, oup, stride, t, keep_3x3)


def test_every_block_has_the_authors_layout():
    table = [(2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1),
             (6, 576, 4, 2), (6, 960, 3, 1), (6, 1280, 1, 1)]  # fmt: skip
    for width, w in (("050", 0.5), ("100", 1.0)):
        model = create_model(f"mobilenext_{width}")
        inp, expected = make_divisible(32 * w), []
        for t, c, n, s in table:
            oup = 1280 if c == 1280 and w < 1 else make_divisible(c * w)
            expected.append(_reference_layout(inp, oup, s, t, n == 1 and s == 1))
            expected += [_reference_layout(oup, oup, 1, t, False)] * (n - 1)
            inp = oup
        assert [_layout(block) for block in model.features[1:]] == expected


def _placed(kind: str, stages="all", blocks="all", **kwargs) -> dict[str, Recorder]:
    spec = recording(kind, stages, blocks)
    model = create_model("mobilenext_050", attn=spec, num_classes=3, img_size=(64, 48), **kwargs)
    model.eval()(torch.randn(1, 3, 64, 48))
    return {name: m for name, m in model.named_modules() if isinstance(m, Recorder)}


def test_a_gate_after_the_first_depthwise_conv_or_at_the_end():
    gates = _placed("gate")
    assert len(gates) == 20
    # after dw1, on the input width, at the input's size
    assert gates["features.1.layers.attn"].seen == (16, 32, 24)
    assert gates["features.4.layers.attn"].seen == (96, 8, 6)
    # no first depthwise conv: at the end, on the output width (no shortcut to come before)
    assert gates["features.3.layers.attn"].seen == (96, 8, 6)  # 72 -> 96, strided
    assert gates["features.9.layers.attn"].seen == (192, 4, 3)  # 144 -> 192, stride 1
    model = create_model("mobilenext_100", attn="se")
    order = [[name for name, _ in model.features[i].layers.named_children()] for i in (4, 3)]
    assert order == [
        ["dw1", "attn", "reduce", "expand", "dw2"],
        ["reduce", "expand", "dw2", "attn"],
    ]


def test_context_goes_after_the_block():
    # the default context placement: stages 2 and 3 (features.3-5 and 6-12), every other block
    context = _placed("context", stages=(2, 3), blocks=2)
    assert sorted(context, key=lambda n: int(n.split(".")[1])) == [
        f"features.{i}.context" for i in (3, 5, 6, 8, 10, 12)
    ]
    assert context["features.5.context"].seen == (96, 8, 6)
    non_local = create_model("mobilenext_050", attn="nonlocal")  # the same, from its config
    assert [n for n, m in non_local.named_modules() if getattr(m, "kind", None)] == sorted(
        context, key=lambda n: int(n.split(".")[1])
    )
    assert sorted(_placed("gate", stages=[4], blocks="last")) == ["features.20.layers.attn"]


def test_a_conv_plugin_replaces_the_last_depthwise_conv():
    convs = _placed("conv")
    # 20 blocks less the two of 1x1 convs only (144 -> 192 and 288 -> 480 at stride 1)
    assert len(convs) == 18
    assert "features.9.layers.dw2.0" not in convs and "features.17.layers.dw2.0" not in convs
    strided = convs["features.3.layers.dw2.0"]
    assert (strided.channels, strided.stride, strided.seen) == (96, 2, (96, 16, 12))
    assert convs["features.4.layers.dw2.0"].stride == 1


def test_plugins_are_told_the_feature_size_they_will_see():
    for kind in ("gate", "context", "conv"):
        for name, plugin in _placed(kind, blocks="all", output_stride=8).items():
            assert plugin.feat_size == plugin.seen[1:], name


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_info_matches_the_levels(output_stride):
    model = create_model("mobilenext_050", features_only=True, output_stride=output_stride)
    levels = model.eval()(torch.randn(1, 3, 64, 64))
    assert model.feature_info.module_name() == [f"features.{i}" for i in (0, 2, 5, 12, 20)]
    assert model.feature_info.channels() == [16, 72, 96, 192, 1280]
    assert model.feature_info.reduction() == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    assert [tuple(x.shape[1:]) for x in levels] == [
        (c, 64 // r, 64 // r)
        for c, r in zip(model.feature_info.channels(), model.feature_info.reduction(), strict=True)
    ]


def test_a_dilated_model_keeps_the_layers_and_the_weights():
    model = create_model("mobilenext_050")
    dilated = create_model("mobilenext_050", output_stride=8)
    dilated.load_state_dict(model.state_dict(), strict=True)
    # the blocks that would have strided keep their depthwise conv, at stride 1
    assert dilated.features[6].layers.dw2[0].stride == (1, 1)
    assert dilated.features[13].layers.dw2[0].dilation == (2, 2)
    assert dilated.features[20].layers.dw1[0].dilation == (4, 4)
    assert dilated.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_classifier_and_features_only():
    model = create_model("mobilenext_140", num_classes=10)
    assert model.num_features == 1792
    fc = model.get_classifier()
    assert fc.out_features == 10 and fc.bias.abs().sum() == 0
    features = create_model("mobilenext_035", features_only=True)
    assert not any(k.startswith("fc.") for k in features.state_dict())
