"""The segmentation heads against plain formulas, and every plugin of the zoo in the attention
head."""

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import visionattn
from tests.attention.test_all_plugins import plugin_config, wake
from visionattn.attention import get_attention
from visionattn.attention.ccnet import CrissCrossAttention
from visionattn.segmentation.heads import create_head, get_head, list_heads
from visionattn.segmentation.heads.attention import AttentionHead
from visionattn.segmentation.heads.deeplabv3 import DeepLabV3Head
from visionattn.segmentation.heads.fcn import FCNHead

CONFIGS = Path(__file__).parents[2] / "configs" / "head"


def randomize_norms(module: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine weights, so that a reference that skips
    or misplaces a norm does not match."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=generator))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=generator))
    return module


def cbr(x: torch.Tensor, layer: nn.Sequential, dilation: int = 1) -> torch.Tensor:
    """relu(BN(conv(x))) written out from the layer's weights, in eval mode."""
    conv, bn = layer[0], layer[1]
    padding = (conv.weight.shape[-1] - 1) // 2 * dilation
    y = F.conv2d(x, conv.weight, None, padding=padding, dilation=dilation)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    return F.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])


def classify(x: torch.Tensor, head: nn.Module) -> torch.Tensor:
    return F.conv2d(x, head.cls_seg.weight, head.cls_seg.bias)


# FCN


@pytest.mark.parametrize("concat_input", [True, False])
def test_fcn_head_is_convs_then_the_optional_concat_then_the_classifier(concat_input):
    head = FCNHead(12, 5, channels=8, num_convs=2, concat_input=concat_input)
    randomize_norms(head).eval()
    x = torch.randn(2, 12, 9, 7)
    ref = cbr(cbr(x, head.convs[0]), head.convs[1])
    if concat_input:
        ref = cbr(torch.cat([x, ref], dim=1), head.conv_cat)
    torch.testing.assert_close(head(x), classify(ref, head))
    assert head(x).shape == (2, 5, 9, 7)


def test_fcn_auxiliary_form_has_one_conv_and_no_concat():
    head = FCNHead(16, 3, channels=256, num_convs=1, concat_input=False)
    assert len(head.convs) == 1 and head.conv_cat is None
    assert head.convs[0][0].weight.shape == (256, 16, 3, 3)
    with pytest.raises(ValueError, match="num_convs"):
        FCNHead(16, 3, num_convs=0)


def test_dropout_acts_in_training_only():
    head = FCNHead(8, 3, channels=8, dropout=0.5)
    x = torch.randn(2, 8, 6, 6)
    head.train()
    assert not torch.allclose(head(x), head(x))
    head.eval()
    torch.testing.assert_close(head(x), head(x))


# DeepLabV3


def aspp_reference(x: torch.Tensor, head: DeepLabV3Head, rates) -> torch.Tensor:
    """The paper's ASPP from the head's weights, with the rates the test names."""
    pooled = cbr(x.mean((2, 3), keepdim=True), head.image_pool.conv)
    branches = [pooled.expand(-1, -1, *x.shape[2:]), cbr(x, head.branches[0])]
    branches += [cbr(x, b, dilation=r) for b, r in zip(head.branches[1:], rates, strict=True)]
    return classify(cbr(torch.cat(branches, dim=1), head.project), head)


@pytest.mark.parametrize(
    ("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))]
)
def test_aspp_equals_its_branches_written_out(output_stride, rates):
    # 40 x 40 maps: a tap 36 away still lands inside, so each rate shows in the output.
    head = DeepLabV3Head(6, 4, channels=5, output_stride=output_stride)
    randomize_norms(head).eval()
    assert head.dilations == rates
    x = torch.randn(2, 6, 40, 40)
    torch.testing.assert_close(head(x), aspp_reference(x, head, rates))
    wrong = (6, 12, 18) if rates != (6, 12, 18) else (12, 24, 36)
    assert not torch.allclose(head(x), aspp_reference(x, head, wrong), atol=1e-4)


def test_aspp_layout_is_the_papers():
    head = DeepLabV3Head(32, 4, output_stride=8)
    assert head.channels == 256
    assert [b[0].kernel_size for b in head.branches] == [(1, 1)] + [(3, 3)] * 3
    assert head.image_pool.conv[0].kernel_size == (1, 1)
    # the paper's projection: 1x1 over the five concatenated branches (mmseg: 3x3)
    assert head.project[0].weight.shape == (256, 5 * 256, 1, 1)


def test_aspp_explicit_dilations_override_the_output_stride():
    head = DeepLabV3Head(6, 4, channels=5, output_stride=8, dilations=[1, 2, 3, 4])
    assert head.dilations == (1, 2, 3, 4) and len(head.branches) == 5
    assert head.project[0].in_channels == 6 * 5
    randomize_norms(head).eval()
    x = torch.randn(2, 6, 10, 10)
    torch.testing.assert_close(head(x), aspp_reference(x, head, (1, 2, 3, 4)))
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3Head(6, 4, output_stride=4)


# Attention head


def attention_reference(x: torch.Tensor, head: AttentionHead) -> torch.Tensor:
    """CCNet's RCCA head: reduce, criss-cross attention, conv, concat with the input,
    bottleneck, classifier; the attention run through the plugin itself."""
    out = cbr(x, head.reduce)
    out = head.attn(out)
    out = cbr(out, head.post)
    return classify(cbr(torch.cat([x, out], dim=1), head.bottleneck), head)


def test_ccnet_in_the_attention_head_is_the_rcca_head():
    head = AttentionHead(64, 5, attn=plugin_config("ccnet"))
    assert head.channels == 16  # in / 4, as CCNet's 512 on 2048
    assert isinstance(head.attn, CrissCrossAttention) and head.attn.recurrence == 2
    assert head.reduce[0].weight.shape == (16, 64, 3, 3)
    assert head.post[0].weight.shape == (16, 16, 3, 3)
    assert head.bottleneck[0].weight.shape == (16, 64 + 16, 3, 3)  # the concat path
    with torch.no_grad():
        head.attn.gamma.fill_(1.0)
    randomize_norms(head).eval()
    x = torch.randn(2, 64, 9, 11)
    torch.testing.assert_close(head(x), attention_reference(x, head))

    # The same weights without a plugin: the plugin is on the path.
    plain = AttentionHead(64, 5, attn=None).eval()
    assert isinstance(plain.attn, nn.Identity)
    missing, unexpected = plain.load_state_dict(head.state_dict(), strict=False)
    assert not missing and all(k.startswith("attn.") for k in unexpected)
    assert not torch.allclose(plain(x), head(x), atol=1e-3)
    with torch.no_grad():
        head.attn.gamma.fill_(0.0)  # closed, RCCA is the identity: the heads agree
    torch.testing.assert_close(plain(x), head(x))


def test_attention_head_channels_default_to_a_quarter_of_the_input():
    with torch.device("meta"):
        assert AttentionHead(2048, 19).channels == 512
        assert AttentionHead(2048, 19, channels=256).channels == 256


PLUGINS = visionattn.list_attentions()


@pytest.mark.parametrize("name", PLUGINS)
def test_every_plugin_works_in_the_attention_head(name):
    # 64 channels: a gate's C / 16 hidden units are then 4, not 2 that one draw can leave all dead
    head = AttentionHead(64, 5, channels=64, attn=plugin_config(name), feat_size=(16, 16))
    kind = get_attention(name).kind
    plugin = head.post[0] if kind == "conv" else head.attn
    assert isinstance(plugin, get_attention(name))
    if kind == "conv":
        assert isinstance(head.attn, nn.Identity)
    wake(plugin)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    logits = head(x)
    assert logits.shape == (2, 5, 16, 16)
    F.cross_entropy(logits, torch.randint(0, 5, (2, 16, 16))).backward()
    assert x.grad.abs().sum() > 0
    for param_name, p in plugin.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, param_name


def test_a_sized_plugin_without_a_feature_size_says_what_to_set():
    with pytest.raises(ValueError, match="img_size"):
        AttentionHead(64, 5, channels=32, attn="linformer")


# Registry and configs


def test_heads_are_built_by_name_and_unknown_names_list_the_valid_ones():
    assert list_heads() == ["attention", "deeplabv3", "fcn"]
    assert isinstance(create_head("fcn", 8, 3, channels=4), FCNHead)
    with pytest.raises(ValueError, match="valid: attention, deeplabv3, fcn"):
        get_head("psp")


@pytest.mark.parametrize("name", ["fcn", "deeplabv3", "attention"])
def test_config_file_holds_the_heads_defaults(name):
    path = CONFIGS / f"{name}.yaml"
    header = path.read_text().splitlines()[0]
    cls = get_head(name)
    assert header.startswith("# ") and header.endswith(f"{cls.__module__.replace('.', '/')}.py")
    config = OmegaConf.to_container(OmegaConf.load(path))
    assert config.pop("name") == name and "_target_" not in config
    params = inspect.signature(cls).parameters
    assert set(config) <= set(params), set(config) - set(params)
    for knob, value in config.items():
        default = params[knob].default
        assert value == (list(default) if isinstance(default, tuple) else default), knob
    create_head(name, 16, 3, **config)
