import math

import pytest
import torch

from visionattn import create_model
from visionattn.attention import create_attention
from visionattn.attention.linformer import LinformerAttention


def reference_linformer(x: torch.Tensor, lf: LinformerAttention) -> torch.Tensor:
    """Wang et al., Eq. 7, head by head: head_i = softmax(Q_i (E K_i)^T / sqrt(d)) (F V_i), with
    E, F (k x N) shared by the heads; out = x + gamma W_o concat(heads)."""
    b, c, h, w = x.shape
    qkv = torch.einsum("oc,bcn->bon", lf.qkv.weight[:, :, 0, 0], x.flatten(2))
    q, k, v = (qkv + lf.qkv.bias[:, None]).chunk(3, dim=1)  # (B, C, N)
    e, f = lf.compress_keys.weight, lf.compress_values.weight  # (k, N)
    d = c // lf.heads
    heads = []
    for i in range(lf.heads):
        qi, ki, vi = (t[:, i * d : (i + 1) * d].transpose(1, 2) for t in (q, k, v))  # (B, N, d)
        logits = qi @ (e @ ki).transpose(1, 2) / math.sqrt(d)  # (B, N, k)
        heads.append(torch.softmax(logits, dim=-1) @ (f @ vi))
    out = torch.cat(heads, dim=-1).transpose(1, 2)  # (B, C, N)
    out = torch.einsum("oc,bcn->bon", lf.proj.weight[:, :, 0, 0], out) + lf.proj.bias[:, None]
    return x + lf.gamma * out.reshape(b, c, h, w)


def test_matches_the_papers_formula():
    torch.manual_seed(0)
    lf = create_attention("linformer", 32, feat_size=(5, 7), k=6, heads=4)
    torch.nn.init.ones_(lf.gamma)
    x = torch.randn(2, 32, 5, 7)
    out = lf(x)
    torch.testing.assert_close(out, reference_linformer(x, lf))
    assert (out - x).abs().mean() > 0.02


def test_paper_defaults_and_projection_shapes():
    lf = LinformerAttention(64, feat_size=(14, 14))
    assert lf.kind == "context" and lf.gamma.item() == 0
    assert lf.heads == 8
    assert lf.compress_keys.weight.shape == lf.compress_values.weight.shape == (256, 196)
    x = torch.randn(1, 64, 14, 14)
    torch.testing.assert_close(lf(x), x, rtol=0, atol=0)


def test_another_feature_size_is_a_clear_error():
    lf = LinformerAttention(16, feat_size=(4, 4), k=8)
    with pytest.raises(ValueError, match=r"linformer: built for a 4x4 feature map .* got 4x6"):
        lf(torch.randn(1, 16, 4, 6))


def test_heads_must_divide_the_channels():
    with pytest.raises(ValueError, match=r"heads=8 must divide the 20 channels; .* 1, 2, 4, 5, 10"):
        LinformerAttention(20, feat_size=(4, 4))


def test_the_backbone_passes_the_feature_size():
    with pytest.raises(ValueError, match="img_size"):
        create_model("resnet18", attn={"name": "linformer", "k": 4}, channels=(8, 16, 32, 64))
    model = create_model(
        "resnet18", attn={"name": "linformer", "k": 4}, channels=(8, 16, 32, 64), img_size=64
    )
    sizes = [m.feat_size for m in model.modules() if isinstance(m, LinformerAttention)]
    assert sizes == [(8, 8), (4, 4)]  # the last block of stages 2 and 3
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_huge_inputs_under_half_precision_stay_finite():
    lf = LinformerAttention(16, feat_size=(8, 8), k=16)
    torch.nn.init.ones_(lf.gamma)
    x = torch.randn(2, 16, 8, 8) * 1000
    for dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            assert torch.isfinite(lf(x)).all(), dtype


def test_works_down_to_a_single_position():
    for size in [(1, 1), (2, 2)]:
        lf = LinformerAttention(8, feat_size=size, k=2, heads=2)
        assert lf(torch.randn(2, 8, *size)).shape == (2, 8, *size)
