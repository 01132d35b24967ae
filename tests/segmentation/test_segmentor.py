"""The segmentor: levels and resolutions, heads by name, where the plugin goes, every backbone
family, and a tiny one that learns."""

import pytest
import torch
import torch.nn.functional as F

import visionattn
from tests.attention.test_all_plugins import plugin_config, wake
from visionattn.attention.ccnet import CrissCrossAttention
from visionattn.attention.linformer import LinformerAttention
from visionattn.attention.se import SqueezeExcite
from visionattn.attention.sk import SelectiveKernelConv
from visionattn.segmentation import (
    AttentionHead,
    DeepLabV3Head,
    FCNHead,
    Segmentor,
    create_segmentor,
)


def tiny_resnet(output_stride: int = 8, **kwargs) -> dict:
    """A model config of a ResNet-18 with one block a stage, 8-16 channels wide."""
    defaults = dict(
        name="resnet18", layers=[1, 1, 1, 1], channels=[8, 8, 16, 16],
        output_stride=output_stride, img_size=64, pretrained=None, drop_rate=0.0,
    )  # fmt: skip
    return {**defaults, **kwargs}


FCN = {"name": "fcn", "channels": 16}


def plugins(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if getattr(m, "kind", None) is not None]


@pytest.mark.parametrize("output_stride", [8, 16])
def test_levels_and_resolutions(output_stride):
    model = create_segmentor(tiny_resnet(output_stride), FCN, None, num_classes=3)
    assert isinstance(model, Segmentor) and model.aux_weight == 0.4
    assert model.output_stride == output_stride
    # the decode head on the last stage, the auxiliary head on the stage before it
    assert model.backbone.feature_info.module_name() == ["layer3", "layer4"]
    assert model.backbone.feature_info.reduction() == [min(16, output_stride), output_stride]
    assert model.decode_head.in_channels == 16 and model.aux_head.in_channels == 16
    images = torch.randn(2, 3, 64, 64)
    side = 64 // output_stride
    out = model.train()(images)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 3, side, side)
    assert out["aux"].shape == (2, 3, 64 // min(16, output_stride), 64 // min(16, output_stride))
    model.eval()
    out = model(images)
    assert set(out) == {"out"}
    logits = model.predict(images)
    assert logits.shape == (2, 3, 64, 64)
    expected = F.interpolate(out["out"], size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)


def test_predict_returns_the_input_size_for_sides_the_stride_does_not_divide():
    model = create_segmentor(tiny_resnet(8), FCN, None, num_classes=2).eval()
    assert model.predict(torch.randn(1, 3, 50, 70)).shape == (1, 2, 50, 70)


def test_the_auxiliary_head_is_mmsegs_fcn_and_exists_only_with_a_weight():
    model = create_segmentor(tiny_resnet(), FCN, None, num_classes=3, aux_weight=0.4)
    aux = model.aux_head
    assert isinstance(aux, FCNHead) and aux.channels == 256 and len(aux.convs) == 1
    assert aux.conv_cat is None
    model = create_segmentor(tiny_resnet(), FCN, None, num_classes=3, aux_weight=0)
    assert model.aux_head is None and model.aux_weight == 0
    assert set(model.train()(torch.randn(2, 3, 64, 64))) == {"out"}


def test_heads_by_name_with_their_knobs():
    model = create_segmentor(
        tiny_resnet(), {"name": "fcn", "channels": 12, "num_convs": 1}, None, 3
    )
    assert isinstance(model.decode_head, FCNHead) and len(model.decode_head.convs) == 1
    with pytest.raises(ValueError, match="valid: attention, deeplabv3, fcn"):
        create_segmentor(tiny_resnet(), {"name": "psp"}, None, 3)


@pytest.mark.parametrize(("output_stride", "rates"), [(8, (12, 24, 36)), (16, (6, 12, 18))])
def test_aspp_rates_follow_the_backbones_output_stride(output_stride, rates):
    head = {"name": "deeplabv3", "channels": 8, "dilations": None}
    model = create_segmentor(tiny_resnet(output_stride), head, None, 3)
    assert isinstance(model.decode_head, DeepLabV3Head)
    assert model.decode_head.dilations == rates
    explicit = {**head, "dilations": [1, 2, 3]}
    model = create_segmentor(tiny_resnet(output_stride), explicit, None, 3)
    assert model.decode_head.dilations == (1, 2, 3)


def test_attention_in_the_head_only_by_default():
    head = {"name": "attention", "channels": None}
    model = create_segmentor(tiny_resnet(), head, plugin_config("ccnet"), 3)
    assert isinstance(model.decode_head, AttentionHead)
    assert model.decode_head.channels == 16 // 4
    assert not plugins(model.backbone)
    assert [type(p) for p in plugins(model.decode_head)] == [CrissCrossAttention]
    # without a plugin: the same head, the baseline
    model = create_segmentor(tiny_resnet(), head, "none", 3)
    assert not plugins(model)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("se", SqueezeExcite), ("ccnet", CrissCrossAttention), ("sk", SelectiveKernelConv)],
)
def test_attention_in_the_backbone_as_in_classification(name, cls):
    model = create_segmentor(tiny_resnet(), FCN, plugin_config(name), 3, attn_at="backbone")
    assert plugins(model.backbone) and all(isinstance(p, cls) for p in plugins(model.backbone))
    assert not plugins(model.decode_head)
    out = model.train()(torch.randn(2, 3, 64, 64))
    (out["out"].logsumexp(1).sum() + out["aux"].logsumexp(1).sum()).backward()
    assert all(p.grad is not None for p in plugins(model.backbone)[0].parameters())


def test_attention_in_both():
    head = {"name": "attention", "channels": 8}
    model = create_segmentor(tiny_resnet(), head, plugin_config("ccnet"), 3, attn_at="both")
    assert plugins(model.backbone) and plugins(model.decode_head)
    assert model.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 3, 8, 8)


def test_bad_attn_at_and_a_plugin_without_a_head_to_hold_it_fail_clearly():
    with pytest.raises(ValueError, match="head, backbone, both"):
        create_segmentor(tiny_resnet(), FCN, "se", 3, attn_at="neck")
    for attn_at in ("head", "both"):
        with pytest.raises(ValueError, match=r"head=attention.*attn_at=backbone"):
            create_segmentor(tiny_resnet(), FCN, "ccnet", 3, attn_at=attn_at)
    create_segmentor(tiny_resnet(), FCN, None, 3, attn_at="head")  # no plugin: any head


def test_sized_plugins_in_the_head_take_the_crops_feature_size():
    head = {"name": "attention", "channels": 8}
    model = create_segmentor(tiny_resnet(8), head, "linformer", 3)
    [plugin] = plugins(model.decode_head)
    assert isinstance(plugin, LinformerAttention)
    assert model.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 3, 8, 8)
    config = {**tiny_resnet(16), "img_size": [64, 96]}  # ceil(64 / 16), ceil(96 / 16)
    model = create_segmentor(config, head, "linformer", 3).eval()
    assert model(torch.randn(1, 3, 64, 96))["out"].shape == (1, 3, 4, 6)
    with pytest.raises(ValueError, match=r"linformer.*size"):
        model(torch.randn(1, 3, 64, 64))  # Linformer is built for one size
    without_size = {**tiny_resnet(), "img_size": None}
    with pytest.raises(ValueError, match="img_size"):
        create_segmentor(without_size, head, "linformer", 3)


@pytest.mark.parametrize("name", ["mobilenetv2_035", "mobilenext_035"])
def test_mobile_backbones_segment_at_output_stride_8(name):
    model_config = dict(name=name, output_stride=8, img_size=64, pretrained=None, drop_rate=0.2)
    model = create_segmentor(model_config, {"name": "attention"}, "ccnet", 3)
    channels = model.backbone.feature_info.channels()
    # MobileNetV2's last block has 320 x width channels (112 at 0.35); MobileNeXt's 1280 always
    assert channels[-1] == {"mobilenetv2_035": 112, "mobilenext_035": 1280}[name]
    assert model.decode_head.channels == channels[-1] // 4
    assert model.aux_head.in_channels == channels[-2]
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert out["out"].shape == (2, 3, 8, 8) and out["aux"].shape == (2, 3, 8, 8)


@pytest.fixture
def one_thread():
    # As in tests/models/test_halonet.py: HaloNet on shared cores is steady on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_halonet_segments_at_output_stride_32_and_says_so_at_8(one_thread):
    config = dict(name="halonet_h0", output_stride=32, img_size=256, pretrained=None)
    model = create_segmentor(config, {"name": "fcn", "channels": 16}, None, 3).eval()
    assert model.output_stride == 32
    with torch.no_grad():
        assert model.predict(torch.randn(1, 3, 256, 256)).shape == (1, 3, 256, 256)
        assert model(torch.randn(1, 3, 256, 256))["out"].shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"model\.output_stride=32"):
        create_segmentor({**config, "output_stride": 8}, FCN, None, 3)


def test_a_tiny_segmentor_memorises_two_images():
    torch.manual_seed(0)
    images = 0.3 * torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[0, 4:20, 6:22] = 1  # a bright square on each image is class 1
    masks[1, 14:30, 10:26] = 1
    images[:, 0] += 2.0 * masks
    head = {"name": "attention", "channels": 8}
    model = create_segmentor(tiny_resnet(8, img_size=32), head, "ccnet", 2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_of(out: dict) -> torch.Tensor:
        up = {k: F.interpolate(v, size=(32, 32), mode="bilinear") for k, v in out.items()}
        return F.cross_entropy(up["out"], masks) + model.aux_weight * F.cross_entropy(
            up["aux"], masks
        )

    losses = []
    for _ in range(30):
        loss = loss_of(model(images))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", visionattn.list_attentions())
def test_every_plugin_works_in_a_dilated_backbone(name):
    """With attn_at=backbone at output stride 8 each plugin sits in blocks whose maps stay at
    1/8 (sized plugins get that size), and trains."""
    model_config = tiny_resnet(channels=[16, 32, 64, 128])
    attn = plugin_config(name)
    if attn["blocks"] == [-2]:  # CGNL's place, before the last block, needs two blocks a stage
        attn["blocks"] = "all"
    model = create_segmentor(model_config, FCN, attn, 3, attn_at="backbone")
    placed = plugins(model.backbone)
    assert placed, f"{name} was placed nowhere"
    for plugin in placed:
        wake(plugin)
    for m in model.modules():  # the blocks' last norms start at zero (zero_init_residual)
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert out["out"].shape == (2, 3, 8, 8)
    F.cross_entropy(out["out"], torch.randint(0, 3, (2, 8, 8))).backward()
    grads = [p.grad for plugin in placed for p in plugin.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
