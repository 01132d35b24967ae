import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.bot import BottleneckAttention

CONFIGS = Path(__file__).parents[2] / "configs" / "attn"


def reference_bot(x: torch.Tensor, bot: BottleneckAttention, stride: int) -> torch.Tensor:
    """BoTNet fig. 4 with dense matrices: per head softmax((q k^T + q r^T) / sqrt(d)) v over all
    H*W positions, r_ij = r^H[y_j - y_i] + r^W[x_j - x_i]; then stride x stride average pooling."""
    batch, _, height, width = x.shape
    dim, heads = bot.out_channels, bot.num_heads
    d = dim // heads
    qkv = torch.einsum("oc,bcn->bon", bot.qkv.weight[:, :, 0, 0], x.flatten(2))
    q, k, v = (t.reshape(batch, heads, d, -1).transpose(-1, -2) for t in qkv.chunk(3, dim=1))
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    r = (
        bot.rel_pos.height[ys[None, :] - ys[:, None] + height - 1]
        + bot.rel_pos.width[xs[None, :] - xs[:, None] + width - 1]
    )  # (HW, HW, d)
    logits = (q @ k.transpose(-1, -2) + torch.einsum("bnid,ijd->bnij", q, r)) / math.sqrt(d)
    out = (logits.softmax(-1) @ v).transpose(-1, -2).reshape(batch, dim, height, width)
    return F.avg_pool2d(out, stride, ceil_mode=True) if stride > 1 else out


@pytest.mark.parametrize("chunk", [None, 3])  # 3: query chunks, the relative logits per axis
@pytest.mark.parametrize(("stride", "size"), [(1, (4, 5)), (2, (6, 4)), (2, (5, 3))])
def test_equals_dense_relative_attention(stride, size, chunk):
    torch.manual_seed(0)
    bot = BottleneckAttention(
        6, out_channels=8, stride=stride, feat_size=size, num_heads=2, chunk=chunk
    )
    x = torch.randn(2, 6, *size)
    out = bot(x)
    assert out.shape[-2:] == tuple(-(-s // stride) for s in size)
    torch.testing.assert_close(out, reference_bot(x, bot, stride), rtol=1e-4, atol=1e-5)


def test_paper_defaults():
    bot = create_attention("bot", 512, feat_size=(14, 14))
    assert bot.num_heads == 4
    assert bot.rel_pos.height.shape == bot.rel_pos.width.shape == (27, 128)


def test_bot50_has_the_papers_parameter_count():
    # Srinivas et al., table: BoT50 20.8M parameters against R50's 25.5M.
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / "bot.yaml"))
    model = visionattn.create_model("resnet50", attn=config, img_size=224)
    plugins = [m for m in model.modules() if isinstance(m, BottleneckAttention)]
    assert len(plugins) == 3 and plugins[0].feat_size == (14, 14)  # c5's first block, pre-pool
    assert plugins[1].feat_size == (7, 7)
    # The paper truncates: its R50 is 25.5M, torchvision's 25,557,032; BoT50 here 20,852,008.
    assert sum(p.numel() for p in model.parameters()) // 100_000 == 208


def test_the_wrong_feature_size_fails_clearly():
    bot = BottleneckAttention(16, feat_size=(7, 7))
    with pytest.raises(ValueError, match=r"bot: built for a 7x7 feature map .* got 14x14"):
        bot(torch.randn(1, 16, 14, 14))
    with pytest.raises(ValueError, match="img_size"):
        visionattn.create_model("resnet50", attn="bot")
    with pytest.raises(ValueError, match="heads that work: 1, 2, 3, 6"):
        BottleneckAttention(6, feat_size=(4, 4))


def test_large_inputs_stay_finite_under_bf16_autocast():
    bot = BottleneckAttention(16, feat_size=(6, 6), stride=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bot(1e3 * torch.randn(2, 16, 6, 6))
    assert torch.isfinite(out).all()
