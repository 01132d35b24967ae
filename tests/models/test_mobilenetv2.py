import pytest
import timm
import torch
import torchvision
from torch import nn

from tests.models.recorder import Recorder, recording
from visionattn import create_model
from visionattn.attention.coordatt import CoordinateAttention
from visionattn.models.mobilenetv2 import InvertedResidual

WIDTHS = {"035": 0.35, "050": 0.5, "075": 0.75, "100": 1.0, "140": 1.4}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("width", WIDTHS)
def test_loads_torchvision_weights_and_computes_the_same(width):
    reference = torchvision.models.mobilenet_v2(width_mult=WIDTHS[width]).eval()
    model = create_model(f"mobilenetv2_{width}").eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_parameter_anchors():
    model = create_model("mobilenetv2_100")
    assert n_params(model) == 3_504_872
    # key conversion from timm's layout is tested with the weight loader; here only the size
    assert n_params(model) == n_params(timm.create_model("mobilenetv2_100"))
    # CA-MobileNetV2: 3.95M in Hou et al. 2021, Table 1
    ca = n_params(create_model("mobilenetv2_100", attn="coordatt"))
    print(f"CA-MobileNetV2-1.0: {ca:,} parameters")
    assert abs(ca - 3.95e6) / 3.95e6 < 0.03


def test_classifier_starts_as_torchvisions():
    model = create_model("mobilenetv2_100", num_classes=10)
    fc = model.get_classifier()  # torchvision's classifier.1
    assert fc is dict(model.named_modules())["classifier.1"] and fc.out_features == 10
    assert fc.bias.abs().sum() == 0 and 0.005 < fc.weight.std() < 0.015
    assert model.num_features == 1280 and create_model("mobilenetv2_140").num_features == 1792


def _model(kind: str, stages="all", blocks="all", **kwargs) -> nn.Module:
    spec = recording(kind, stages, blocks)
    model = create_model("mobilenetv2_100", attn=spec, num_classes=3, img_size=(64, 48), **kwargs)
    model.eval()(torch.randn(1, 3, 64, 48))
    return model


def _placed(kind: str, stages="all", blocks="all", **kwargs) -> dict[str, Recorder]:
    model = _model(kind, stages, blocks, **kwargs)
    return {name: m for name, m in model.named_modules() if isinstance(m, Recorder)}


def test_a_gate_after_the_depthwise_conv_of_every_block():
    gates = _placed("gate")
    assert sorted(gates, key=lambda n: int(n.split(".")[1])) == [
        f"features.{i}.attn" for i in range(1, 18)
    ]
    assert gates["features.1.attn"].seen == (32, 32, 24)  # t=1: the stem's width
    assert gates["features.2.attn"].seen == (96, 16, 12)  # hidden width, after the stride
    assert gates["features.17.attn"].seen == (960, 2, 2)
    ca = create_model("mobilenetv2_100", attn="coordatt")
    assert [m.conv1.in_channels for m in ca.modules() if isinstance(m, CoordinateAttention)][
        :3
    ] == [32, 96, 144]


def test_context_goes_after_the_block_where_the_default_places_it():
    # stages 2 and 3 by output stride: features.4-6 (stride 8) and 7-13 (stride 16), every
    # other block from the last
    context = _placed("context", stages=(2, 3), blocks=2)
    assert sorted(context, key=lambda n: int(n.split(".")[1])) == [
        f"features.{i}.context" for i in (4, 6, 7, 9, 11, 13)
    ]
    assert context["features.6.context"].seen == (32, 8, 6)
    assert context["features.13.context"].seen == (96, 4, 3)
    non_local = create_model("mobilenetv2_100", attn="nonlocal")  # the same, from its config
    assert [n for n, m in non_local.named_modules() if getattr(m, "kind", None)] == sorted(
        context, key=lambda n: int(n.split(".")[1])
    )
    se = create_model("mobilenetv2_100", attn="se")
    assert sum(getattr(m, "kind", None) == "gate" for m in se.modules()) == 17
    assert sorted(_placed("gate", stages=[1])) == [f"features.{i}.attn" for i in (1, 2, 3)]
    assert sorted(_placed("gate", stages=[4], blocks="last")) == ["features.17.attn"]


def test_a_conv_plugin_replaces_the_depthwise_conv_and_keeps_its_norm():
    model = _model("conv")
    strided = model.features[2].conv[1][0]
    assert isinstance(strided, Recorder)
    assert (strided.channels, strided.stride, strided.seen) == (96, 2, (96, 32, 24))
    first = model.features[1].conv[0][0]  # t=1: the depthwise conv comes first
    assert isinstance(first, Recorder) and (first.channels, first.stride) == (32, 1)
    kept = model.features[2].conv[1]
    assert isinstance(kept[1], nn.BatchNorm2d) and isinstance(kept[2], nn.ReLU6)


def test_plugins_are_told_the_feature_size_they_will_see():
    for kind in ("gate", "context", "conv"):
        for name, plugin in _placed(kind, blocks="all").items():
            assert plugin.feat_size == plugin.seen[1:], name
        for name, plugin in _placed(kind, blocks="all", output_stride=8).items():
            assert plugin.feat_size == plugin.seen[1:], name


def test_without_attention_the_blocks_hold_identities():
    model = create_model("mobilenetv2_100")
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert all(
        isinstance(b.attn, nn.Identity) and isinstance(b.context, nn.Identity) for b in blocks
    )


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_info_matches_the_levels(output_stride):
    model = create_model("mobilenetv2_100", features_only=True, output_stride=output_stride)
    levels = model(torch.randn(1, 3, 64, 64))
    assert model.feature_info.module_name() == [f"features.{i}" for i in (1, 3, 6, 13, 17)]
    assert model.feature_info.channels() == [16, 24, 32, 96, 320]
    assert model.feature_info.reduction() == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    assert [tuple(x.shape[1:]) for x in levels] == [
        (c, 64 // r, 64 // r)
        for c, r in zip(model.feature_info.channels(), model.feature_info.reduction(), strict=True)
    ]


def test_features_only_drops_the_head():
    model = create_model("mobilenetv2_050", features_only=True, out_indices=(1, 4)).eval()
    keys = model.state_dict()
    assert not any(k.startswith(("features.18.", "classifier.")) for k in keys)
    assert [x.shape[1] for x in model(torch.randn(1, 3, 32, 32))] == [16, 160]
    assert model.feature_info.channels() == [16, 160]


def test_a_dilated_model_takes_the_same_weights():
    reference = torchvision.models.mobilenet_v2().eval()
    model = create_model("mobilenetv2_100", output_stride=8).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    dilated = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1]
    assert {m.dilation[0] for m in dilated} == {2, 4}
    assert all(m.padding == m.dilation for m in dilated)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_a_stage_the_backbone_lacks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"attn.stages=\[5\]: this backbone has stages 1..4"):
        create_model("mobilenetv2_100", attn={"name": "se", "stages": [5]})
