import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.deform import DeformableConv


def bilinear(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """x ``(B, C, H, W)`` sampled at real positions ``py, px`` ``(B, h, w)`` by bilinear
    interpolation, each of the four neighbours counting zero outside the map."""
    b, c, height, width = x.shape
    flat = x.flatten(2)
    out = x.new_zeros(b, c, *py.shape[1:])
    y0, x0 = py.floor(), px.floor()
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            weight = (1 - (py - yi).abs()) * (1 - (px - xi).abs())
            inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
            index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long()
            values = flat.gather(2, index.flatten(1)[:, None].expand(-1, c, -1))
            out += values.reshape(out.shape) * (weight * inside)[:, None]
    return out


def reference_deform(x: torch.Tensor, m: DeformableConv) -> torch.Tensor:
    """DCNv2 eq. 3: y(p) = sum_k w_k * m_k(p) * x(p + p_k + dp_k(p)), p_k on the 3x3 grid with
    padding 1; offsets (dy, dx) per tap, then the modulation logits, from the offset conv."""
    s = m.stride
    predicted = F.conv2d(x, m.offset.weight, m.offset.bias, stride=s, padding=1)
    b, _, h, w = predicted.shape
    oy = torch.arange(h, dtype=x.dtype)[:, None] * s
    ox = torch.arange(w, dtype=x.dtype)[None, :] * s
    out = x.new_zeros(b, m.weight.shape[0], h, w)
    for i in range(3):
        for j in range(3):
            tap = 3 * i + j
            py = oy - 1 + i + predicted[:, 2 * tap]
            px = ox - 1 + j + predicted[:, 2 * tap + 1]
            sample = bilinear(x, py, px)
            if m.modulated:
                sample = sample * 2 * torch.sigmoid(predicted[:, 18 + tap])[:, None]
            out += torch.einsum("oc,bchw->bohw", m.weight[:, :, i, j], sample)
    return out


def _deformed(m: DeformableConv) -> DeformableConv:
    # Offsets of a few pixels, fractional, some pointing off the map; modulation away from 1.
    torch.manual_seed(0)
    with torch.no_grad():
        m.offset.weight.normal_(0, 0.3)
        m.offset.bias.uniform_(-2, 2)
    return m


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("modulated", [True, False])
def test_matches_explicit_bilinear_sampling(stride, modulated):
    m = _deformed(DeformableConv(8, out_channels=12, stride=stride, modulated=modulated))
    x = torch.randn(2, 8, 7, 9)
    torch.testing.assert_close(m(x), reference_deform(x, m), atol=1e-5, rtol=1e-4)


def test_starts_as_the_plain_conv_and_loads_its_weight():
    conv = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
    m = create_attention("deform", 16, out_channels=32, stride=2)
    m.load_state_dict({"weight": conv.weight}, strict=False)
    x = torch.randn(2, 16, 9, 8)
    out = m(x)
    assert out.shape == (2, 32, 5, 4)
    torch.testing.assert_close(out, conv(x))


def test_defaults_are_dcnv2():
    m = DeformableConv(16)
    assert m.kind == "conv" and m.modulated and m.stride == 1
    assert m.weight.shape == (16, 16, 3, 3)
    assert m.offset.out_channels == 27  # 2 * 9 offsets + 9 modulation logits
    assert not m.offset.weight.any() and not m.offset.bias.any()
    assert DeformableConv(16, modulated=False).offset.out_channels == 18


def test_gradients_reach_offsets_weight_and_input():
    m = _deformed(DeformableConv(8))
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in [*m.named_parameters(), ("x", x)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_channels_last_and_bf16_autocast():
    m = _deformed(DeformableConv(8))
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x * 1000)
    assert torch.isfinite(out).all()
