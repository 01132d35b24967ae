import pytest
import timm
import torch
from torch import nn

from tests.models.recorder import Recorder, recording
from visionattn import create_model
from visionattn.attention import attention_factory
from visionattn.attention.halo import HaloAttention
from visionattn.attention.se import SqueezeExcite
from visionattn.models.halonet import HaloBlock, HaloNet

# The paper's parameter counts (millions), H0..H7.
PAPER_PARAMS = [5.5, 8.1, 9.4, 11.8, 19.1, 30.7, 43.4, 67.4]


@pytest.fixture(autouse=True)
def _one_thread():
    # On CPU cores shared with other jobs, a two-thread pass of H0 at 256 px swings from 0.4 s to
    # 17 s (threads spinning at barriers); one thread takes a steady 0.6 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(**kwargs) -> HaloNet:
    """A HaloNet small enough for CPU tests: one block a stage, 2 x 2 blocks, values twice as
    wide as queries and keys (rv = 2, as in H5..H7), and a final 1x1 conv (df)."""
    defaults = dict(
        layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), num_heads=(2, 2, 2, 2),
        bottleneck_ratio=2, value_ratio=2, block_size=2, halo_size=1, final_channels=48,
        num_classes=3, img_size=64, zero_init_last=False,
    )  # fmt: skip
    return HaloNet(**{**defaults, **kwargs})


def test_parameter_counts_match_the_paper():
    counts, off = [], {}
    for n, paper in enumerate(PAPER_PARAMS):
        with torch.device("meta"):  # counts only: no memory, no init
            count = n_params(create_model(f"halonet_h{n}"))
        counts.append(count)
        off[f"halonet_h{n}"] = round(count / 1e6 / paper - 1, 4)
        print(f"halonet_h{n}: {count:,} parameters, paper {paper}M, {count / 1e6 / paper - 1:+.2%}")
    assert all(abs(o) < 0.03 for o in off.values()), f"off the paper by: {off}"
    # The measured counts, so that a change to the layout shows (all within 0.3% of the paper).
    assert counts == [
        5_495_880, 8_093_832, 9_397_704, 11_834_504,
        19_097_864, 30_710_536, 43_441_160, 67_421_064,
    ]  # fmt: skip


def test_h1_is_timms_halonet_h1_layer_for_layer():
    # timm's halonet_h1, built independently, differs only in its relative position tables:
    # 2 (b + 2h) - 1 = 27 rows of depth mid / 8 in every block (8 heads in every stage), where
    # ours have one row per displacement that occurs, of depth mid / 4 in stage 1 (4 heads).
    ours, theirs = create_model("halonet_h1"), timm.create_model("halonet_h1")
    assert n_params(theirs) == 8_100_056

    def tables(model: nn.Module) -> int:
        return sum(p.numel() for name, p in model.named_parameters() if "rel" in name)

    assert n_params(ours) - tables(ours) == n_params(theirs) - tables(theirs) == 8_068_520
    timm_rows = 2 * (8 + 2 * 3) - 1
    assert tables(theirs) == 2 * timm_rows * (3 * 8 + 3 * 16 + 10 * 32 + 3 * 64)
    strided, plain = 14 + 2 * 3, 14 + 8 - 1  # window + stride * (query block - 1)
    assert tables(ours) == 2 * (
        3 * plain * 16 + (strided + 2 * plain) * 16
        + (strided + 9 * plain) * 32 + (strided + 2 * plain) * 64
    )  # fmt: skip


def test_h0_forward_and_backward_at_256():
    torch.manual_seed(0)
    model = create_model("halonet_h0", num_classes=3, img_size=256, zero_init_last=False)
    assert isinstance(model.layer1[0].conv2, HaloAttention)
    assert [model.layer1[0].conv2.num_heads, model.layer2[0].conv2.num_heads] == [4, 8]
    assert [model.layer2[0].conv2.stride, model.layer2[1].conv2.stride] == [2, 1]
    assert [model.layer3[0].conv3.out_channels, model.num_features] == [128, 256]  # rb = 0.5
    logits = model(torch.randn(1, 3, 256, 256))
    assert logits.shape == (1, 3)
    logits.sum().backward()
    assert model.layer1[0].conv2.q.weight.grad.abs().sum() > 0
    assert model.layer4[2].conv2.rel_pos.height.grad.abs().sum() > 0
    # By default every residual branch starts at zero, as ResNet's.
    blocks = [m for m in create_model("halonet_h0").modules() if isinstance(m, HaloBlock)]
    assert len(blocks) == 16 and all(b.last_norm().weight.abs().sum() == 0 for b in blocks)


def test_values_wider_than_queries_and_a_final_conv():
    model = tiny()
    halo = model.layer2[0].conv2
    assert (halo.qk_channels, halo.out_channels, halo.stride) == (16, 32, 2)
    assert model.layer2[0].conv3.in_channels == 32 and model.num_features == 48
    assert model.final_conv[0].in_channels == 128
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_image_sizes_the_blocks_cannot_cut_fail_naming_the_sizes_that_work():
    # The default data is 32 px: `train.py model=halonet_h0` fails before training.
    with pytest.raises(ValueError) as error:
        create_model("halonet_h0", img_size=32, num_classes=3)
    assert str(error.value) == (
        "halonet_h0 takes images whose sides are multiples of 256 (block size 8 on the "
        "stride-32 map), got 32x32"
    )
    with pytest.raises(ValueError, match=r"halonet_h0 takes .* multiples of 256 .* got 224x224"):
        create_model("halonet_h0", img_size=224)
    with torch.device("meta"):
        with pytest.raises(ValueError, match=r"halonet_h7 .* multiples of 320 .* got 600x600"):
            create_model("halonet_h7", img_size=600)  # the paper's size
        create_model("halonet_h7", img_size=640)
        with pytest.raises(ValueError, match=r"halonet_h5 .* multiples of 448 .*, got 448x384"):
            create_model("halonet_h5", img_size=(448, 384))
    # Built without a size, the model checks its input before the first layer.
    model = create_model("halonet_h0")
    with pytest.raises(ValueError, match=r"halonet_h0 takes .* multiples of 256 .* got 256x224"):
        model(torch.randn(1, 3, 256, 224))
    with pytest.raises(ValueError, match=r"HaloNet takes .* multiples of 64 .* got 32x64"):
        tiny(img_size=None)(torch.randn(1, 3, 32, 64))


def test_no_output_stride_but_32():
    create_model("halonet_h0", output_stride=32)
    with pytest.raises(ValueError, match=r"halonet_h0 has no dilated form.*got 16.*MobileNeXt"):
        create_model("halonet_h0", output_stride=16)


@pytest.mark.parametrize("out_indices", [None, (1, 4)])
def test_features_only_levels_are_what_feature_info_says(out_indices):
    model = tiny(features_only=True, out_indices=out_indices)
    assert not hasattr(model, "fc") and not hasattr(model, "final_conv")
    levels = model(torch.randn(2, 3, 64, 128))
    info = model.feature_info
    assert [f.shape[1] for f in levels] == info.channels()
    assert [64 // f.shape[2] for f in levels] == info.reduction()
    assert [128 // f.shape[3] for f in levels] == info.reduction()
    if out_indices is None:
        assert info.channels() == [64, 16, 32, 64, 128]
        assert info.reduction() == [2, 4, 8, 16, 32]
        assert info.module_name() == ["act1", "layer1", "layer2", "layer3", "layer4"]


def _placed(kind: str, stages="all", blocks="all", size=(64, 128)) -> dict[str, Recorder]:
    model = tiny(attn=recording(kind, stages, blocks), img_size=size)
    model(torch.randn(1, 3, *size))
    return {name: m for name, m in model.named_modules() if isinstance(m, Recorder)}


def test_each_kind_of_plugin_goes_in_its_place():
    gates = _placed("gate")  # after the last norm, before the add
    assert sorted(gates) == [f"layer{i}.0.attn" for i in range(1, 5)]
    assert gates["layer3.0.attn"].seen == (64, 4, 8)
    context = _placed("context", stages=(2,))  # after the block
    assert list(context) == ["layer2.0.context"] and context["layer2.0.context"].seen == (32, 8, 16)
    convs = _placed("conv", stages=(2, 3))  # instead of the halo attention, with its stride
    conv = convs["layer2.0.conv2"]
    assert (conv.channels, conv.out_channels, conv.stride) == (16, 32, 2)  # mid -> rv * mid
    assert conv.feat_size == (16, 32) and conv.seen == (16, 16, 32)
    assert sorted(convs) == ["layer2.0.conv2", "layer3.0.conv2"]


def test_a_conv_plugin_in_every_block_lifts_the_size_rule_of_the_halo_blocks():
    # Halo layers left anywhere keep the rule; none left, the model takes any size.
    with pytest.raises(ValueError, match="multiples of 64"):
        _placed("conv", stages=(2, 3), size=(48, 40))
    assert len(_placed("conv", size=(48, 40))) == 4


def test_real_plugins_by_name():
    se = create_model("halonet_h0", attn="se", num_classes=3, img_size=256)
    gates = [m for m in se.modules() if isinstance(m, SqueezeExcite)]
    assert len(gates) == 3 + 3 + 7 + 3 and se.layer1[0].attn is gates[0]
    sasa = tiny(attn=attention_factory({"name": "sasa", "stages": [4]}))
    assert not isinstance(sasa.layer4[0].conv2, HaloAttention)
    assert isinstance(sasa.layer3[0].conv2, HaloAttention)
    assert sasa(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert all(isinstance(m, HaloBlock) for m in sasa.layer4)
