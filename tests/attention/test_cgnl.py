import math

import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.cgnl import CompactGeneralizedNonLocal


def dot_kernel(a: torch.Tensor, b: torch.Tensor, cgnl) -> torch.Tensor:
    return a[:, None] * b[None, :]


def taylor_rbf_kernel(a: torch.Tensor, b: torch.Tensor, cgnl) -> torch.Tensor:
    """exp(-g a^2) exp(-g b^2) sum_{p <= P} (2 g)^p / p! a^p b^p, the series written out."""
    g = cgnl.rbf_gamma
    series = sum(
        (2 * g) ** p / math.factorial(p) * a[:, None] ** p * b[None, :] ** p
        for p in range(cgnl.order + 1)
    )
    return torch.exp(-g * a[:, None] ** 2) * torch.exp(-g * b[None, :] ** 2) * series


def exact_rbf_kernel(a: torch.Tensor, b: torch.Tensor, cgnl) -> torch.Tensor:
    return torch.exp(-cgnl.rbf_gamma * (a[:, None] - b[None, :]) ** 2)


def reference_cgnl(x: torch.Tensor, cgnl: CompactGeneralizedNonLocal, kernel) -> torch.Tensor:
    """Yue et al., eq. 3 un-approximated: in each channel group, the full (C' N) x (C' N) kernel
    matrix between all entries of theta and phi, times vec(g); then the grouped W_z, GroupNorm
    and the residual."""
    b, _, h, w = x.shape
    theta, phi, g = (F.conv2d(x, conv.weight) for conv in (cgnl.theta, cgnl.phi, cgnl.g))
    size = theta.shape[1] // cgnl.groups
    y = torch.empty_like(theta)
    for n in range(b):
        for group in range(cgnl.groups):
            channels = slice(group * size, (group + 1) * size)
            t, p, v = (a[n, channels].reshape(-1) for a in (theta, phi, g))
            y[n, channels] = (kernel(t, p, cgnl) @ v).reshape(size, h, w)
    z = F.conv2d(y, cgnl.out_conv.weight, groups=cgnl.groups)
    norm = cgnl.out_norm
    return x + F.group_norm(z, cgnl.groups, norm.weight, norm.bias, norm.eps)


def opened(cgnl: CompactGeneralizedNonLocal) -> CompactGeneralizedNonLocal:
    with torch.no_grad():
        cgnl.out_norm.weight.fill_(1.0)
        cgnl.out_norm.bias.normal_()
    return cgnl


def test_dot_product_kernel_matches_the_full_kernel_matrix():
    torch.manual_seed(0)
    cgnl = opened(create_attention("cgnl", 32, groups=4))
    x = torch.randn(2, 32, 5, 6)
    torch.testing.assert_close(cgnl(x), reference_cgnl(x, cgnl, dot_kernel))


def test_gaussian_kernel_matches_its_taylor_series():
    torch.manual_seed(0)
    cgnl = opened(create_attention("cgnl", 32, groups=4, kernel="gaussian", rbf_gamma=0.05))
    x = torch.randn(2, 32, 5, 6)
    torch.testing.assert_close(cgnl(x), reference_cgnl(x, cgnl, taylor_rbf_kernel))


def test_gaussian_series_approaches_the_rbf_kernel_with_the_order():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 6)
    errors = []
    for order in (1, 3):
        torch.manual_seed(1)
        cgnl = opened(
            CompactGeneralizedNonLocal(32, kernel="gaussian", order=order, rbf_gamma=0.05)
        )
        errors.append((cgnl(x) - reference_cgnl(x, cgnl, exact_rbf_kernel)).abs().max())
    assert errors[1] < 1e-2 < errors[0]


def test_paper_defaults():
    cgnl = CompactGeneralizedNonLocal(1024)
    assert (cgnl.groups, cgnl.kernel, cgnl.rbf_gamma) == (8, "dot", 1e-4)
    assert cgnl.theta.out_channels == cgnl.phi.out_channels == cgnl.g.out_channels == 512
    assert cgnl.out_conv.groups == 8 and cgnl.out_norm.num_groups == 8
    assert not cgnl.out_norm.weight.any()  # identity at init
    gaussian = CompactGeneralizedNonLocal(1024, kernel="gaussian")
    assert gaussian.coeffs.numel() == 4  # Taylor order 3: p = 0..3


def test_bad_groups_and_kernel_are_clear_errors():
    with pytest.raises(
        ValueError, match=r"cgnl: groups 8 must divide .* groups that work here: 1, 2, 3, 6"
    ):
        CompactGeneralizedNonLocal(12)
    with pytest.raises(ValueError, match="cgnl: kernel must be one of dot, gaussian"):
        CompactGeneralizedNonLocal(16, kernel="embedded")


@pytest.mark.parametrize("kernel", ["dot", "gaussian"])
def test_half_precision_autocast_matches_fp32(kernel):
    # The compact sums grow like C' N |x|^3: they are computed in fp32 whatever autocast says.
    torch.manual_seed(0)
    cgnl = opened(create_attention("cgnl", 16, kernel=kernel)).eval()
    x = 1e2 * torch.randn(2, 16, 8, 6)
    with torch.autocast("cpu", dtype=torch.float16):
        half = cgnl(x)
    torch.testing.assert_close(half, cgnl(x), rtol=1e-2, atol=2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(cgnl(10 * x)).all()
