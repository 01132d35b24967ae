import pytest
import torch

from visionattn.attention import create_attention
from visionattn.attention.danet import DualAttention


def project(x: torch.Tensor, conv) -> torch.Tensor:
    """A 1x1 conv from its weights, in x's dtype: (B, C, N) -> (B, C', N)."""
    w, b = conv.weight[:, :, 0, 0].to(x.dtype), conv.bias[:, None].to(x.dtype)
    return torch.einsum("oc,bcn->bon", w, x) + b


def reference_danet(x: torch.Tensor, da: DualAttention) -> torch.Tensor:
    """Fu et al., Eq. 1-4 in float64: position s_ji = softmax_i(B_i . C_j), E_pam = D s^T;
    channel x_ji = softmax_i over the authors' rowmax(E) - E of E = A A^T, E_cam = x A;
    out = A + gamma (E_pam + E_cam)."""
    b, c, h, w = x.shape
    a = x.flatten(2).double()
    q, k, v = (project(a, conv) for conv in (da.query, da.key, da.value))
    s = torch.softmax(torch.einsum("bdj,bdi->bji", q, k), dim=-1)  # query j, key i
    pam = torch.einsum("bji,bci->bcj", s, v)
    energy = torch.einsum("bin,bjn->bij", a, a)  # C x C
    logits = energy.amax(-1, keepdim=True) - energy
    weights = torch.exp(logits - logits.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    cam = torch.einsum("bij,bjn->bin", weights, a)
    return (a + da.gamma.double() * (pam + cam)).reshape(b, c, h, w).float()


@pytest.mark.parametrize("channels", [16, 24, 40])
def test_matches_the_papers_formula_at_any_channel_count(channels):
    # The channel branch takes C from the input (a known port hard-codes it).
    torch.manual_seed(0)
    da = create_attention("danet", channels)
    torch.nn.init.ones_(da.gamma)
    x = torch.randn(2, channels, 5, 7) * 0.2
    out = da(x)
    torch.testing.assert_close(out, reference_danet(x, da))
    assert (out - x).abs().mean() > 0.05


def test_the_channel_branch_has_no_weights_and_gamma_gates_both_branches():
    da = DualAttention(64)
    assert da.kind == "context"
    assert sorted(n for n, _ in da.named_parameters()) == [
        "gamma", "key.bias", "key.weight", "query.bias", "query.weight", "value.bias",
        "value.weight",
    ]  # fmt: skip
    assert da.query.out_channels == da.key.out_channels == 8  # C / 8
    x = torch.randn(2, 64, 4, 4)
    torch.testing.assert_close(da(x), x, rtol=0, atol=0)
    torch.nn.init.constant_(da.gamma, 0.5)
    torch.testing.assert_close(da(x), x + 0.5 * (da.position(x) + da.channel(x)))


def test_the_channel_branch_favours_the_least_similar_channels():
    # softmax(rowmax(E) - E) = softmax(-E): the authors' code, not the paper's softmax(E).
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1]])[None, :, :, None]  # (1, 2 channels, 2, 1)
    energy = torch.einsum("in,jn->ij", a[0, :, :, 0], a[0, :, :, 0])
    expected = torch.softmax(-energy, dim=-1) @ a[0, :, :, 0]
    torch.testing.assert_close(DualAttention.channel(a)[0, :, :, 0], expected)


def test_huge_inputs_under_half_precision_stay_finite():
    # The channel energy at x 1000 on 16x16 positions is ~1e8: past fp16, computed in fp32.
    da = DualAttention(16)
    torch.nn.init.ones_(da.gamma)
    x = torch.randn(2, 16, 16, 16) * 1000
    for dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            assert torch.isfinite(da(x)).all(), dtype


def test_works_down_to_a_single_position():
    da = DualAttention(8)
    for size in [(1, 1), (2, 2)]:
        assert da(torch.randn(2, 8, *size)).shape == (2, 8, *size)
