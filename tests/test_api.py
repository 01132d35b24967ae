import pytest
import torch

import visionattn
from visionattn.attention import create_attention, get_attention


def test_lists():
    widths = ("035", "050", "075", "100", "140")
    assert set(visionattn.list_models()) == {
        *(f"resnet{depth}" for depth in (18, 34, 50, 101, 152)),
        *(f"mobilenetv2_{width}" for width in widths),
        *(f"mobilenext_{width}" for width in widths),
        *(f"halonet_h{size}" for size in range(8)),
    }
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


CATALOGUE = {
    "gate": "se eca cbam bam coordatt gc triplet gsop",
    "context": "nonlocal sagan ccnet issa a2 linformer cgnl external fastformer efficient axial "
    "caa danet generalized",
    "conv": "halo sasa aa bot involution sk deform",
}


def test_every_plugin_of_the_catalogue_is_there_with_its_kind():
    assert visionattn.list_attentions() == sorted(" ".join(CATALOGUE.values()).split())
    for kind, names in CATALOGUE.items():
        for name in names.split():
            assert get_attention(name).kind == kind, name
