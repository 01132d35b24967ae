import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import visionattn
from tests.helpers import CONFIGS
from visionattn.attention import create_attention
from visionattn.attention.gsop import GlobalSecondOrderPooling


def bn_eval(t: torch.Tensor, norm: torch.nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode BN over axis 1 of ``t``, any trailing axes."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (t - norm.running_mean.view(shape)) * scale.view(shape) + norm.bias.view(shape)


def reference_gsop(x: torch.Tensor, gsop: GlobalSecondOrderPooling) -> torch.Tensor:
    """Gao et al., sec. 3.1 (eval mode): X' = relu(BN(conv1x1(X))) with c channels; the c x c
    covariance S = (1/N) sum_n (x'_n - mu)(x'_n - mu)^T; each row i of S batch-normalised as a
    channel; row-wise conv: row i alone -> e outputs; s = sigmoid(W v + b); Y = s * X."""
    conv, norm, _ = gsop.reduce
    b, _, h, w = x.shape
    reduced = torch.relu(bn_eval(F.conv2d(x, conv.weight), norm)).reshape(b, -1, h * w)
    c = reduced.shape[1]
    e = gsop.row_conv.out_channels // c
    out = []
    for sample in range(b):
        centred = reduced[sample] - reduced[sample].mean(dim=1, keepdim=True)
        cov = centred @ centred.T / (h * w)
        rows = bn_eval(cov[None], gsop.row_norm)[0]  # (c, c), row i normalised as channel i
        v = torch.stack([
            gsop.row_conv.weight[i * e + k, 0, :, 0] @ rows[i] + gsop.row_conv.bias[i * e + k]
            for i in range(c) for k in range(e)
        ])  # fmt: skip
        s = torch.sigmoid(gsop.fc.weight[:, :, 0, 0] @ v + gsop.fc.bias)
        out.append(x[sample] * s[:, None, None])
    return torch.stack(out)


def test_matches_the_papers_formula():
    torch.manual_seed(0)
    gsop = create_attention("gsop", 12, dim=6).eval()
    for norm in (gsop.reduce[1], gsop.row_norm):
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.normal_()
        norm.bias.data.normal_()
    x = torch.randn(2, 12, 5, 7)
    torch.testing.assert_close(gsop(x), reference_gsop(x, gsop))


def test_defaults_are_the_papers():
    gsop = GlobalSecondOrderPooling(256)
    assert gsop.reduce[0].out_channels == 128
    assert gsop.row_conv.out_channels == 4 * 128 and gsop.row_conv.groups == 128
    assert gsop.row_conv.kernel_size == (128, 1)


def test_gsop_net1_puts_one_block_at_the_end_of_each_stage():
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / "attn" / "gsop.yaml"))
    model = visionattn.create_model("resnet50", attn=config)
    placed = sorted(n for n, m in model.named_modules() if isinstance(m, GlobalSecondOrderPooling))
    assert placed == ["layer1.2.attn", "layer2.3.attn", "layer3.5.attn", "layer4.2.attn"]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 28.28


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_large_inputs_stay_finite_under_autocast_in_training_too(dtype):
    gsop = create_attention("gsop", 16, dim=8)
    x = 1e3 * torch.randn(2, 16, 8, 6)
    with torch.autocast("cpu", dtype=dtype):
        out = gsop(x)
    assert torch.isfinite(out).all() and out.dtype == x.dtype


def test_bad_knobs_fail_clearly():
    with pytest.raises(ValueError, match="gsop: dim and expansion must be at least 1"):
        GlobalSecondOrderPooling(64, dim=0)
