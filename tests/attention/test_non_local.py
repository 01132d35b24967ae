import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.non_local import MODES, NonLocal


def project(x: torch.Tensor, conv) -> torch.Tensor:
    """A 1x1 conv from its weights: (B, C, H, W) -> (B, C', H, W)."""
    return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[:, None, None]


def reference_non_local(x: torch.Tensor, nl: NonLocal, sub_sample: bool) -> torch.Tensor:
    """Wang et al., Eq. 1-6, in eval mode: y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j) with the N x M
    matrix f built in full; z = BN(W_z y) + x. With sub-sampling, phi and g are 2x2 max-pooled
    after their projection (the border rounded up)."""
    b, c, h, w = x.shape

    def positions(t):  # (B, C, H, W) -> (B, positions, C), pooled if sub-sampling
        t = F.max_pool2d(t, 2, ceil_mode=True) if sub_sample else t
        return t.flatten(2).transpose(1, 2)

    g = positions(project(x, nl.g))
    if nl.mode == "gaussian":
        theta, phi = x.flatten(2).transpose(1, 2), positions(x)
    else:
        theta = project(x, nl.theta).flatten(2).transpose(1, 2)
        phi = positions(project(x, nl.phi))
    m = phi.shape[1]
    if nl.mode in ("gaussian", "embedded_gaussian"):
        f = torch.exp(theta @ phi.transpose(1, 2))
        weights = f / f.sum(-1, keepdim=True)
    elif nl.mode == "dot_product":
        weights = theta @ phi.transpose(1, 2) / m
    else:
        pairs = torch.cat(
            [theta[:, :, None].expand(-1, -1, m, -1), phi[:, None].expand(-1, h * w, -1, -1)],
            dim=-1,
        )  # (B, N, M, 2 * inner): [theta(x_i), phi(x_j)]
        weights = torch.relu(pairs @ nl.w_f.weight[0]) / m
    y = weights @ g  # (B, N, inner)
    wz = torch.einsum("oc,bnc->bon", nl.w_z.weight[:, :, 0, 0], y)
    bn = nl.out_norm
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    z = (wz - bn.running_mean[:, None]) * scale[:, None] + bn.bias[:, None]
    return x + z.reshape(b, c, h, w)


def opened(nl: NonLocal) -> NonLocal:
    """Eval mode with a non-trivial output BN, so the attention path shows in the output."""
    with torch.no_grad():
        nl.out_norm.weight.uniform_(0.5, 1.5)
        nl.out_norm.bias.uniform_(-0.5, 0.5)
        nl.out_norm.running_mean.uniform_(-0.5, 0.5)
        nl.out_norm.running_var.uniform_(0.5, 2.0)
    return nl.eval()


@pytest.mark.parametrize("sub_sample", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_matches_the_papers_formula(mode, sub_sample):
    torch.manual_seed(0)
    nl = opened(create_attention("nonlocal", 16, mode=mode, sub_sample=sub_sample))
    x = torch.randn(2, 16, 5, 7) * (0.3 if mode == "gaussian" else 1.0)
    with torch.no_grad():
        out, expected = nl(x), reference_non_local(x, nl, sub_sample)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        assert (out - x).abs().mean() > 0.1


def test_paper_defaults():
    nl = NonLocal(64)
    assert nl.mode == "embedded_gaussian"
    assert nl.g.out_channels == nl.theta.out_channels == nl.phi.out_channels == 32
    # Sub-sampling on, as the paper uses in all its blocks: 5x7 -> 3x4 positions attended to.
    assert nl.pool(torch.randn(1, 32, 5, 7)).shape[-2:] == (3, 4)
    assert not hasattr(NonLocal(64, mode="gaussian"), "theta")
    assert NonLocal(64, mode="concatenation").w_f.weight.shape == (1, 64)


def test_starts_as_the_identity_through_a_zero_bn_weight():
    nl = create_attention("nonlocal", 16)
    assert nl.kind == "context"
    assert torch.count_nonzero(nl.out_norm.weight) == 0
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(nl(x), x, rtol=0, atol=0)


def test_an_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="nonlocal: mode 'embedded' is not one of gaussian, "):
        NonLocal(16, mode="embedded")


@pytest.mark.parametrize("mode", MODES)
def test_huge_inputs_under_bf16_autocast_stay_finite(mode):
    nl = opened(NonLocal(16, mode=mode))
    x = torch.randn(2, 16, 8, 8) * 1000
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(nl(x)).all()


@pytest.mark.parametrize("mode", ["gaussian", "embedded_gaussian"])
def test_softmax_modes_do_not_overflow_fp16_logits(mode):
    # x 1000 makes theta^T phi far beyond fp16's 65504; the softmax output stays in range. (The
    # dot-product and concatenation outputs grow with the input's cube and square: at x 1000
    # they leave fp16's range whatever the logits, so they are checked under bf16 above.)
    nl = opened(NonLocal(16, mode=mode))
    x = torch.randn(2, 16, 8, 8) * 1000
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert torch.isfinite(nl(x)).all()


def test_works_down_to_a_single_position():
    nl = opened(NonLocal(8))
    for size in [(1, 1), (2, 2), (1, 3)]:
        assert nl(torch.randn(2, 8, *size)).shape == (2, 8, *size)
