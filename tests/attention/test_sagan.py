import torch

from visionattn.attention import create_attention
from visionattn.attention.sagan import SelfAttention


def project(x: torch.Tensor, conv) -> torch.Tensor:
    """A 1x1 conv from its weights: (B, C, N) -> (B, C', N)."""
    return torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], x) + conv.bias[:, None]


def reference_sagan(x: torch.Tensor, sa: SelfAttention) -> torch.Tensor:
    """Zhang et al., Eq. 1-3: s_ij = f(x_i)^T g(x_j); beta_ji = exp(s_ij) / sum_i exp(s_ij);
    o_j = sum_i beta_ji h(x_i); y = gamma * o + x. No scaling of s."""
    b, c, h, w = x.shape
    flat = x.flatten(2)
    f, g, v = project(flat, sa.query), project(flat, sa.key), project(flat, sa.value)
    s = torch.einsum("bdj,bdi->bji", f, g)  # query j, key i
    beta = torch.exp(s - s.amax(-1, keepdim=True))
    beta = beta / beta.sum(-1, keepdim=True)
    o = torch.einsum("bji,bci->bcj", beta, v)
    return x + sa.gamma * o.reshape(b, c, h, w)


def test_matches_the_papers_formula():
    torch.manual_seed(0)
    sa = create_attention("sagan", 32)
    torch.nn.init.ones_(sa.gamma)
    x = torch.randn(2, 32, 5, 7)
    out = sa(x)
    torch.testing.assert_close(out, reference_sagan(x, sa))
    assert (out - x).abs().mean() > 0.05


def test_queries_and_keys_have_c_over_8_channels_and_gamma_starts_at_zero():
    sa = SelfAttention(64)
    assert sa.kind == "context"
    assert sa.query.out_channels == sa.key.out_channels == 8
    assert sa.value.out_channels == 64
    assert sa.gamma.item() == 0
    x = torch.randn(2, 64, 4, 4)
    torch.testing.assert_close(sa(x), x, rtol=0, atol=0)


def test_huge_inputs_under_half_precision_stay_finite():
    sa = SelfAttention(16)
    torch.nn.init.ones_(sa.gamma)
    x = torch.randn(2, 16, 8, 8) * 1000
    for dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            assert torch.isfinite(sa(x)).all(), dtype


def test_works_down_to_a_single_position():
    sa = SelfAttention(8)
    for size in [(1, 1), (2, 2)]:
        assert sa(torch.randn(2, 8, *size)).shape == (2, 8, *size)
