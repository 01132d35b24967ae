import pytest
import torch
import torchvision

from visionattn.attention import create_attention
from visionattn.attention.coordatt import CoordinateAttention


def reference_coordatt(x: torch.Tensor, ca: CoordinateAttention) -> torch.Tensor:
    """Hou et al. (eval mode): z^h_c(h) = mean_w x_c(h, w), z^w_c(w) = mean_h x_c(h, w);
    f = h_swish(BN(F1 [z^h, z^w])); g^h = sigmoid(F_h f^h), g^w = sigmoid(F_w f^w);
    y_c(i, j) = x_c(i, j) g^h_c(i) g^w_c(j)."""
    h, w = x.shape[2:]
    z_h = torch.stack([x[:, :, i, :].mean(dim=2) for i in range(h)], dim=2)  # (B, C, H)
    z_w = torch.stack([x[:, :, :, j].mean(dim=2) for j in range(w)], dim=2)  # (B, C, W)
    z = torch.cat([z_h, z_w], dim=2)  # (B, C, H + W)
    f = torch.einsum("mc,bcn->bmn", ca.conv1.weight[:, :, 0, 0], z)
    bn = ca.bn1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    f = (f - bn.running_mean[:, None]) * scale[:, None] + bn.bias[:, None]
    f = f * torch.clamp(f + 3, 0, 6) / 6  # h-swish
    g_h = torch.sigmoid(
        torch.einsum("cm,bmn->bcn", ca.conv_h.weight[:, :, 0, 0], f[:, :, :h])
        + ca.conv_h.bias[:, None]
    )
    g_w = torch.sigmoid(
        torch.einsum("cm,bmn->bcn", ca.conv_w.weight[:, :, 0, 0], f[:, :, h:])
        + ca.conv_w.bias[:, None]
    )
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = x[:, :, i, j] * g_h[:, :, i] * g_w[:, :, j]
    return out


def test_matches_the_papers_formula_on_a_non_square_map():
    torch.manual_seed(0)
    ca = create_attention("coordatt", 16).eval()
    ca.bn1.running_mean.normal_()
    ca.bn1.running_var.uniform_(0.5, 2.0)
    ca.bn1.weight.data.normal_()
    ca.bn1.bias.data.normal_()
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(ca(x), reference_coordatt(x, ca))


def test_hidden_width_is_max_of_eight_and_c_over_32():
    widths = {c: CoordinateAttention(c).conv1.out_channels for c in (16, 64, 256, 512, 2048)}
    assert widths == {16: 8, 64: 8, 256: 8, 512: 16, 2048: 64}
    assert isinstance(CoordinateAttention(64).act, torch.nn.Hardswish)


def test_ca_mobilenetv2_has_the_papers_parameter_count():
    # The paper puts the block after the depthwise conv of every inverted residual block.
    model = torchvision.models.mobilenet_v2()
    total = sum(p.numel() for p in model.parameters())
    for block in model.features:
        if isinstance(block, torchvision.models.mobilenetv2.InvertedResidual):
            depthwise = next(m for m in block.modules() if getattr(m, "groups", 1) > 1)
            total += sum(
                p.numel() for p in CoordinateAttention(depthwise.out_channels).parameters()
            )
    assert round(total / 1e6, 2) == 3.95


def test_bad_knobs_fail_clearly():
    with pytest.raises(ValueError, match="coordatt: reduction and min_hidden must be at least 1"):
        CoordinateAttention(64, reduction=0)
