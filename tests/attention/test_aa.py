import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.aa import AttentionAugmentedConv

CONFIGS = Path(__file__).parents[2] / "configs" / "attn"


def reference_aa(x: torch.Tensor, aa: AttentionAugmentedConv) -> torch.Tensor:
    """AA paper eq. 1-5 with dense matrices: Concat[Conv(X), Concat_h[O_h] W^O], O_h =
    softmax((Q K^T + S_H + S_W) / sqrt(d_k^h)) V, [S_H]_ij = q_i.r^H[j_y - i_y],
    [S_W]_ij = q_i.r^W[j_x - i_x]. Strided, the attention sees the 3x3 / 2 average-pooled input."""
    conv = F.conv2d(x, aa.conv.weight, stride=aa.stride, padding=aa.conv.padding)
    if aa.stride > 1:
        x = F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
    batch, _, height, width = x.shape
    heads, dk, dv = aa.num_heads, aa.dk, aa.dv
    w = aa.qkv.weight[:, :, 0, 0]
    flat = x.flatten(2).transpose(1, 2)  # (B, HW, F_in)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    r_h = aa.rel_pos.height[ys[None, :] - ys[:, None] + height - 1]  # (HW, HW, d_k^h)
    r_w = aa.rel_pos.width[xs[None, :] - xs[:, None] + width - 1]
    heads_out = []
    for h in range(heads):
        wq = w[h * dk // heads : (h + 1) * dk // heads]
        wk = w[dk + h * dk // heads : dk + (h + 1) * dk // heads]
        wv = w[2 * dk + h * dv // heads : 2 * dk + (h + 1) * dv // heads]
        q, k, v = flat @ wq.T, flat @ wk.T, flat @ wv.T
        s_h = torch.einsum("bid,ijd->bij", q, r_h)
        s_w = torch.einsum("bid,ijd->bij", q, r_w)
        logits = (q @ k.transpose(1, 2) + s_h + s_w) / math.sqrt(dk // heads)
        heads_out.append(logits.softmax(-1) @ v)
    mha = torch.cat(heads_out, -1) @ aa.proj.weight[:, :, 0, 0].T  # (B, HW, d_v)
    mha = mha.transpose(1, 2).reshape(batch, dv, height, width)
    return torch.cat([conv, mha], 1)


@pytest.mark.parametrize("chunk", [None, 3])  # 3: query chunks, the relative logits per axis
@pytest.mark.parametrize(("stride", "size"), [(1, (4, 5)), (2, (6, 4)), (2, (5, 7))])
def test_equals_the_papers_formula(stride, size, chunk):
    torch.manual_seed(0)
    aa = AttentionAugmentedConv(
        6,
        out_channels=20,
        stride=stride,
        feat_size=size,
        num_heads=2,
        min_key_dim=3,
        upsilon=0.2,
        chunk=chunk,
    )
    assert (aa.dk, aa.dv) == (6, 4)  # 2 heads x max(3, round(0.2 * 20 / 2)), 2 x round(2.0)
    x = torch.randn(2, 6, *size)
    out = aa(x)
    assert out.shape == (2, 20, -(-size[0] // stride), -(-size[1] // stride))
    torch.testing.assert_close(out, reference_aa(x, aa), rtol=1e-4, atol=1e-5)


def test_paper_depths_kappa_2_upsilon_0_2_and_20_key_dims_a_head():
    # kappa = 2 upsilon = 0.2, N_h = 8; keys get at least 20 dimensions a head.
    aa = create_attention("aa", 256, feat_size=(14, 14))
    assert (aa.num_heads, aa.dk, aa.dv) == (8, 160, 24)
    assert aa.conv.out_channels == 256 - 24 and aa.rel_pos.height.shape == (27, 20)
    big = create_attention("aa", 1024, feat_size=(7, 7))
    assert (big.dk, big.dv) == (8 * 26, 8 * 13)  # 0.2 * 1024 / 8 = 25.6; 0.1 * 1024 / 8 = 12.8


def test_aa_resnet50_has_the_papers_parameter_count():
    # Bello et al., table 2: AA-ResNet-50 25.8M parameters (ResNet-50 25.6M); 25,781,872 here
    # with the config's stages 2-4 (25,844,536 with every stage; kappa = 0.4, upsilon = 0.2
    # would give 25.0M).
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / "aa.yaml"))
    model = visionattn.create_model("resnet50", attn=config, img_size=224)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 25.8
    assert not any(isinstance(m, AttentionAugmentedConv) for m in model.layer1.modules())


def test_fully_attentional_when_upsilon_is_one():
    aa = AttentionAugmentedConv(8, feat_size=(3, 3), upsilon=1.0, num_heads=2, min_key_dim=2)
    assert aa.conv is None and aa(torch.randn(1, 8, 3, 3)).shape == (1, 8, 3, 3)


def test_bad_settings_fail_clearly():
    aa = AttentionAugmentedConv(16, feat_size=(8, 8))
    with pytest.raises(ValueError, match=r"aa: built for a 8x8 feature map .* got 7x7"):
        aa(torch.randn(1, 16, 7, 7))
    with pytest.raises(ValueError, match=r"d_v=16 .* more than out_channels 8"):
        AttentionAugmentedConv(8, feat_size=(4, 4), num_heads=16)
    with pytest.raises(ValueError, match="img_size"):
        visionattn.create_model("resnet50", attn="aa")


def test_large_inputs_stay_finite_under_bf16_autocast():
    aa = AttentionAugmentedConv(16, feat_size=(6, 6), stride=2, num_heads=2, min_key_dim=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = aa(1e3 * torch.randn(2, 16, 6, 6))
    assert torch.isfinite(out).all()
