import pytest
import timm
import torch
import torchvision
from torch import nn

from tests.models.recorder import Recorder, recording
from visionattn import create_model
from visionattn.attention import AttentionSpec
from visionattn.attention.placement import Placement
from visionattn.attention.se import SqueezeExcite
from visionattn.models.resnet import BasicBlock, ResNet


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_loads_torchvision_weights_and_computes_the_same(name):
    reference = getattr(torchvision.models, name)().eval()
    model = create_model(name).eval()
    assert n_params(model) == n_params(reference)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_parameter_anchors():
    # The catalogue's anchors: torchvision resnet50 25,557,032; SE-ResNet-50 28.09M, as timm's.
    assert n_params(create_model("resnet50")) == 25_557_032
    se50 = create_model("resnet50", attn="se")
    assert n_params(se50) == n_params(timm.create_model("seresnet50")) == 28_088_024


def test_a_gate_in_every_block_before_the_add():
    model = create_model("resnet50", attn="se", num_classes=10)
    gates = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(gates) == 3 + 4 + 6 + 3
    assert [g.fc1.in_channels for g in gates[:4]] == [256, 256, 256, 512]
    assert model.layer1[0].attn is gates[0]


def test_without_attention_the_blocks_hold_identities():
    for attn in (None, "none", {"name": "none"}):
        model = create_model("resnet18", attn=attn)
        assert not any(isinstance(m, SqueezeExcite) for m in model.modules())
    assert n_params(create_model("resnet18", attn=None)) == n_params(torchvision.models.resnet18())


def test_narrow_widths_and_classes():
    model = create_model("resnet18", num_classes=7, channels=(16, 32, 64, 128))
    assert model.num_features == 128
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="four stages"):
        create_model("resnet18", channels=(16, 32, 64))


def test_zero_init_last_starts_every_residual_branch_at_zero():
    model = create_model("resnet18")
    norms = [m.last_norm().weight for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(norms) == 8 and all(w.abs().sum() == 0 for w in norms)
    assert create_model("resnet18", zero_init_last=False).layer1[0].bn2.weight.abs().sum() > 0


class _ZeroGammaPlugin(nn.Module):
    """A context-style plugin whose paper asks for a zero-initialised output norm."""

    kind = "context"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x):
        return x + self.norm(x)


def test_backbone_init_leaves_the_plugins_own_init_alone():
    spec = AttentionSpec("zero", _ZeroGammaPlugin, placement=Placement("all", "all"))
    model = ResNet(BasicBlock, (1, 1, 1, 1), attn=spec, zero_init_last=False)
    plugins = [m for m in model.modules() if isinstance(m, _ZeroGammaPlugin)]
    assert len(plugins) == 4
    assert all(p.norm.weight.abs().sum() == 0 for p in plugins)


def _placed(kind: str, arch: str, stages="all", blocks="all") -> dict[str, Recorder]:
    spec = recording(kind, stages, blocks)
    model = create_model(
        arch, attn=spec, num_classes=3, channels=(8, 16, 32, 64), img_size=(64, 48)
    )
    model(torch.randn(1, 3, 64, 48))
    return {name: m for name, m in model.named_modules() if isinstance(m, Recorder)}


def test_each_kind_goes_in_its_place():
    gates = _placed("gate", "resnet50")
    assert len(gates) == 16 and "layer1.0.attn" in gates
    assert gates["layer3.5.attn"].seen == (128, 4, 3)  # after conv3, before the add
    context = _placed("context", "resnet50", blocks="all")
    assert "layer2.0.context" in context and context["layer4.2.context"].seen == (256, 2, 2)
    convs = _placed("conv", "resnet50")
    strided = convs["layer2.0.conv2"]
    assert (strided.channels, strided.stride, strided.seen) == (16, 2, (16, 16, 12))
    basic = _placed("conv", "resnet18")["layer3.0.conv2"]  # a basic block's second conv
    assert (basic.channels, basic.stride, basic.seen) == (32, 1, (32, 4, 3))


def test_plugins_are_told_the_feature_size_they_will_see():
    for kind, arch in (("gate", "resnet18"), ("context", "resnet50"), ("conv", "resnet50")):
        for name, plugin in _placed(kind, arch, blocks="all").items():
            assert plugin.feat_size == plugin.seen[1:], name


def test_non_local_placement_gives_the_papers_five_blocks():
    # Wang et al. 2018: "5 blocks (3 to res4 and 2 to res3, to every other residual block)".
    blocks = _placed("context", "resnet50", stages=[2, 3], blocks=2)
    assert sorted(blocks) == [
        "layer2.1.context", "layer2.3.context",
        "layer3.1.context", "layer3.3.context", "layer3.5.context",
    ]  # fmt: skip
    assert sorted(_placed("gate", "resnet18", stages=[4], blocks="last")) == ["layer4.1.attn"]
    assert sorted(_placed("gate", "resnet18", stages=[1], blocks=[0])) == ["layer1.0.attn"]


def test_a_stage_the_backbone_lacks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"attn.stages=\[5\]: this backbone has stages 1..4"):
        create_model("resnet18", attn={"name": "se", "stages": [5]})


def test_a_placement_that_selects_no_block_is_a_clear_error():
    # CGNL's place, the block before the last of stage 3, does not exist with one block a stage.
    attn = {"name": "cgnl", "stages": [3], "blocks": [-2]}
    with pytest.raises(ValueError, match=r"selects no block of resnet18: set attn.stages"):
        create_model("resnet18", attn=attn, layers=[1, 1, 1, 1])


def test_context_plugins_keep_torchvision_weights_loadable():
    # A context plugin adds keys after the block and renames none of the backbone's.
    model = create_model("resnet18", attn={"name": "sagan", "blocks": "all"})
    missing, unexpected = model.load_state_dict(
        torchvision.models.resnet18().state_dict(), strict=False
    )
    assert not unexpected and missing and all(".context." in k for k in missing)


@pytest.mark.parametrize(
    ("output_stride", "dilate"), [(16, [False, False, True]), (8, [False, True, True])]
)
def test_output_stride_dilates_as_torchvision_does(output_stride, dilate):
    reference = torchvision.models.resnet50(replace_stride_with_dilation=dilate).eval()
    model = create_model("resnet50", output_stride=output_stride).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_features_have_the_channels_and_strides_they_claim(name, output_stride):
    model = create_model(name, features_only=True, output_stride=output_stride, attn="nonlocal")
    levels = model(torch.randn(1, 3, 64, 96))
    info = model.feature_info
    assert [f.shape[1] for f in levels] == info.channels()
    assert [(f.shape[2], f.shape[3]) for f in levels] == [
        (64 // r, 96 // r) for r in info.reduction()
    ]
    assert info.reduction() == [2, 4, 8, min(16, output_stride), min(32, output_stride)]
    assert not hasattr(model, "fc")


def test_out_indices_pick_levels_and_bad_ones_name_the_levels():
    model = create_model("resnet18", features_only=True, out_indices=(1, -1)).eval()
    assert model.feature_info.channels() == [64, 512]
    assert [f.shape[1] for f in model(torch.randn(1, 3, 32, 32))] == [64, 512]
    with pytest.raises(ValueError, match=r"must index the 5 feature levels .* \[2, 4, 8, 16, 32\]"):
        create_model("resnet18", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32, got 4"):
        create_model("resnet18", output_stride=4)
