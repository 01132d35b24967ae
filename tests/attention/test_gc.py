import pytest
import torch
from omegaconf import OmegaConf

import visionattn
from tests.helpers import CONFIGS
from visionattn.attention import create_attention
from visionattn.attention.gc import GlobalContext


def opened(gc: GlobalContext) -> GlobalContext:
    """The last conv of the transform starts at zero (identity): give it weights."""
    with torch.no_grad():
        gc.transform[-1].weight.normal_()
        gc.transform[-1].bias.normal_()
    return gc


def reference_gc(x: torch.Tensor, gc: GlobalContext) -> torch.Tensor:
    """Cao et al., eq. 3: z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j a_j x_j)), with
    a_j = exp(W_k x_j) / sum_m exp(W_k x_m) over all H x W positions."""
    b, c, h, w = x.shape
    feats = x.reshape(b, c, h * w)
    logits = torch.einsum("c,bcn->bn", gc.conv_mask.weight.flatten(), feats)
    a = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    a = a / a.sum(dim=1, keepdim=True)
    context = (feats * a[:, None, :]).sum(dim=2)  # (B, C)
    conv1, norm, _, conv2 = gc.transform
    t = context @ conv1.weight[:, :, 0, 0].T + conv1.bias
    mean, var = t.mean(dim=1, keepdim=True), t.var(dim=1, unbiased=False, keepdim=True)
    t = (t - mean) / torch.sqrt(var + norm.eps) * norm.weight.flatten() + norm.bias.flatten()
    t = torch.relu(t) @ conv2.weight[:, :, 0, 0].T + conv2.bias
    return x + t[:, :, None, None]


def test_matches_the_papers_formula():
    torch.manual_seed(0)
    gc = opened(create_attention("gc", 32, reduction=4))
    with torch.no_grad():
        gc.transform[1].weight.normal_()
        gc.transform[1].bias.normal_()
    x = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(gc(x), reference_gc(x, gc))


def test_a_fresh_block_returns_its_input_and_an_opened_one_trains_everything():
    gc = create_attention("gc", 32)
    x = torch.randn(2, 32, 6, 6)
    assert torch.equal(gc(x), x)
    opened(gc)(x).square().sum().backward()
    for name, p in gc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_defaults_are_the_papers():
    gc = GlobalContext(256)
    assert gc.transform[0].out_channels == 256 // 16
    assert isinstance(gc.transform[1], torch.nn.LayerNorm)
    assert gc.transform[1].normalized_shape == (16, 1, 1)


def test_gc_resnet50_on_c3_to_c5_has_the_papers_parameter_count():
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / "attn" / "gc.yaml"))
    model = visionattn.create_model("resnet50", attn=config)
    assert not any(isinstance(m, GlobalContext) for m in model.layer1.modules())
    total = sum(p.numel() for p in model.parameters())
    assert round(total / 1e6, 2) == 28.08
    # In stage 1's three 256-channel blocks too it would be 28.11M: the paper's count leaves out c2.
    stage1 = 3 * sum(p.numel() for p in GlobalContext(256).parameters())
    assert round((total + stage1) / 1e6, 2) == 28.11


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_large_inputs_stay_finite_under_autocast(dtype):
    gc = opened(create_attention("gc", 16, reduction=4))
    x = 1e3 * torch.randn(2, 16, 8, 6)
    with torch.autocast("cpu", dtype=dtype):
        out = gc(x)
    assert torch.isfinite(out).all()


def test_bad_reduction_fails_clearly():
    with pytest.raises(ValueError, match="gc: reduction must be at least 1"):
        GlobalContext(64, reduction=0)


def test_a_single_hidden_channel_is_refused():
    # LayerNorm of one value is constant: the block could not learn from its context.
    with pytest.raises(ValueError, match=r"gc: channels // reduction = 16 // 16 leaves 1 hidden"):
        create_attention("gc", 16)
