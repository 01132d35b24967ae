import math

import pytest
import torch
import torch.nn.functional as F

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.involution import Involution


def window_means(x: torch.Tensor, s: int) -> torch.Tensor:
    """Mean of each s x s window (the last ones cut by the border), ceil(H / s) x ceil(W / s)."""
    h, w = math.ceil(x.shape[2] / s), math.ceil(x.shape[3] / s)
    out = x.new_zeros(*x.shape[:2], h, w)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = x[:, :, i * s : i * s + s, j * s : j * s + s].mean((2, 3))
    return out


def reference_involution(x: torch.Tensor, m: Involution) -> torch.Tensor:
    """Paper eq. 4 and 6 (eval mode): H = W1 ReLU(BN(W0 x)) at each output position, then
    y[c, i, j] = sum_{u, v} H[g(c), u, v, i, j] * x_pad[c, i * s + u, j * s + v]."""
    k, s, groups = m.kernel_size, m.stride, m.groups
    conv0, bn = m.reduce[0], m.reduce[1]
    pooled = window_means(x, s)
    hidden = torch.einsum("oc,bchw->bohw", conv0.weight[:, :, 0, 0], pooled)
    hidden = (hidden - bn.running_mean[:, None, None]) / torch.sqrt(
        bn.running_var[:, None, None] + bn.eps
    )
    hidden = torch.relu(hidden * bn.weight[:, None, None] + bn.bias[:, None, None])
    kernel = torch.einsum("oc,bchw->bohw", m.span.weight[:, :, 0, 0], hidden)
    kernel = kernel + m.span.bias[:, None, None]
    b, c = x.shape[:2]
    h, w = kernel.shape[2:]
    padded = F.pad(x, [k // 2] * 4)
    group_of = torch.arange(c) // (c // groups)
    out = x.new_zeros(b, c, h, w)
    for u in range(k):
        for v in range(k):
            taps = kernel[:, group_of * k * k + u * k + v]  # (B, C, h, w)
            out += taps * padded[:, :, u : u + s * (h - 1) + 1 : s, v : v + s * (w - 1) + 1 : s]
    if not isinstance(m.proj, torch.nn.Identity):
        out = torch.einsum("oc,bchw->bohw", m.proj.weight[:, :, 0, 0], out)
    return out


def _randomise_norm(m: Involution) -> Involution:
    bn = m.reduce[1]
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.2)
    return m.eval()


@pytest.mark.parametrize(
    "stride, out_channels, kernel_size", [(1, None, 7), (2, None, 7), (2, 48, 3), (1, 16, 5)]
)
def test_matches_the_papers_formula(stride, out_channels, kernel_size):
    m = Involution(32, out_channels=out_channels, stride=stride, kernel_size=kernel_size)
    m = _randomise_norm(m)
    x = torch.randn(2, 32, 9, 7)
    out = m(x)
    assert out.shape == (2, out_channels or 32, math.ceil(9 / stride), math.ceil(7 / stride))
    torch.testing.assert_close(out, reference_involution(x, m), atol=1e-5, rtol=1e-4)


def test_defaults_from_the_paper():
    m = create_attention("involution", 64)
    assert m.kind == "conv" and m.kernel_size == 7 and m.stride == 1
    assert m.groups == 64 // 16  # 16 channels share a kernel
    assert m.reduce[0].out_channels == 64 // 4  # r = 4
    assert m.span.out_channels == 7 * 7 * 4
    assert isinstance(m.proj, torch.nn.Identity)


def test_bad_sizes_give_clear_errors():
    with pytest.raises(ValueError, match=r"group_channels 16 must divide the 24 channels.*1, 2, 3"):
        Involution(24)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        Involution(32, kernel_size=4)


def test_tiny_maps_and_channels_last():
    m = _randomise_norm(Involution(16, stride=2))
    x = torch.randn(2, 16, 2, 2)
    assert m(x).shape == (2, 16, 1, 1)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x))


def test_rednet_parameter_counts():
    # RedNet-50 / -101 (paper, Table 2): 15.5M / 25.6M. RedNet's stem (3x3 conv, involution,
    # 3x3 conv) holds about 10k more parameters than the ResNet stem kept here.
    for arch, millions in [("resnet50", 15.5), ("resnet101", 25.6)]:
        model = visionattn.create_model(arch, attn="involution")
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions, arch
