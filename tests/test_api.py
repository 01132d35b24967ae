import pytest
import torch

import visionattn
from visionattn.attention import KINDS, create_attention


def test_lists():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(
        visionattn.list_models()
    )
    assert "se" in visionattn.list_attentions()
    assert visionattn.list_models() == sorted(visionattn.list_models())


def test_create_model_with_a_plugin_by_name_or_config():
    by_name = visionattn.create_model("resnet18", attn="se", num_classes=3)
    by_config = visionattn.create_model(
        "resnet18", attn={"name": "se", "reduction": 8}, num_classes=3
    )
    assert by_name.layer1[0].attn.fc1.out_channels == 64 // 16
    assert by_config.layer1[0].attn.fc1.out_channels == 64 // 8
    assert by_config(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet51'; valid: .*resnet50"):
        visionattn.create_model("resnet51")
    with pytest.raises(ValueError, match=r"unknown attention plugin 'sse'; valid: none, .*se"):
        visionattn.create_model("resnet18", attn="sse")
    with pytest.raises(ValueError, match="unknown attention plugin"):
        create_attention("nope", 8)


def test_every_plugin_declares_its_kind():
    for name in visionattn.list_attentions():
        assert create_attention(name, 64).kind in KINDS, name
