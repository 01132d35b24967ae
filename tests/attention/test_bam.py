import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import visionattn
from tests.helpers import CONFIGS
from visionattn.attention import create_attention
from visionattn.attention.bam import BAM


def randomise_norms(module: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine weights, so that eval mode tests every BN."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()


def reference_bam(x: torch.Tensor, bam: BAM) -> torch.Tensor:
    """Park et al., eq. 1-4 (eval mode): F' = F + F * sigmoid(Mc(F) + Ms(F)) with
    Mc = BN(W1 relu(W0 avgpool(F) + b0)) and Ms = BN(1x1(d3x3(d3x3(1x1(F))))), each inner conv
    followed by BN and ReLU."""

    def bn(t, norm):
        shape = (1, -1, 1, 1)
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return (t - norm.running_mean.view(shape)) * scale.view(shape) + norm.bias.view(shape)

    fc0, _, fc1, channel_norm = bam.channel_gate
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ fc0.weight[:, :, 0, 0].T + fc0.bias)
    mc = bn((hidden @ fc1.weight[:, :, 0, 0].T)[:, :, None, None], channel_norm)

    convs = [m for m in bam.spatial_gate if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in bam.spatial_gate if isinstance(m, torch.nn.BatchNorm2d)]
    s = x
    for i, (conv, norm) in enumerate(zip(convs, norms, strict=True)):
        d = conv.dilation[0]
        s = bn(F.conv2d(s, conv.weight, padding=d * (conv.kernel_size[0] // 2), dilation=d), norm)
        if i < len(convs) - 1:
            s = torch.relu(s)
    return x + x * torch.sigmoid(mc + s)


def test_matches_the_papers_formula():
    torch.manual_seed(0)
    bam = create_attention("bam", 32, reduction=4).eval()
    randomise_norms(bam)
    x = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(bam(x), reference_bam(x, bam))


def test_output_is_the_input_plus_a_gated_copy():
    bam = create_attention("bam", 32, reduction=4)
    x = torch.rand(4, 32, 6, 6) + 0.1
    ratio = bam(x) / x
    assert (ratio > 1).all() and (ratio < 2).all()


def test_defaults_are_the_papers():
    bam = BAM(256)
    convs = [m for m in bam.spatial_gate if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 16, 1]
    assert [c.dilation for c in convs] == [(1, 1), (4, 4), (4, 4), (1, 1)]
    assert bam.channel_gate[0].out_channels == 256 // 16


def test_r50_bam_sits_at_stage_ends_with_the_papers_parameter_count():
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / "attn" / "bam.yaml"))
    model = visionattn.create_model("resnet50", attn=config)
    placed = sorted(n for n, m in model.named_modules() if isinstance(m, BAM))
    assert placed == ["layer1.2.attn", "layer2.3.attn", "layer3.5.attn"]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 25.92


def test_bad_knobs_fail_clearly():
    with pytest.raises(ValueError, match="bam: dilation must be at least 1"):
        BAM(64, dilation=0)
    with pytest.raises(ValueError, match="bam: reduction must be at least 1"):
        BAM(64, reduction=0)
