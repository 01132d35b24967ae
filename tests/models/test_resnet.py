import pytest
import timm
import torch
import torchvision
from torch import nn

from visionattn import create_model
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
    model = ResNet(BasicBlock, (1, 1, 1, 1), attn_layer=_ZeroGammaPlugin, zero_init_last=False)
    plugins = [m for m in model.modules() if isinstance(m, _ZeroGammaPlugin)]
    assert len(plugins) == 4
    assert all(p.norm.weight.abs().sum() == 0 for p in plugins)
