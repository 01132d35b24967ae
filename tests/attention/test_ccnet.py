import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.ccnet import CrissCrossAttention
from visionattn.measure import count_flops


def reference_cca(x: torch.Tensor, cca: CrissCrossAttention) -> torch.Tensor:
    """Huang et al., eq. 1-2, written as full attention over all HW positions with a mask that
    keeps each position's row and column; the position itself is one entry of the mask, so it
    is counted once. No 1/sqrt(d) scaling."""
    b, c, h, w = x.shape
    q, k, v = (
        F.conv2d(x, conv.weight, conv.bias).flatten(2) for conv in (cca.query, cca.key, cca.value)
    )
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    allowed = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
    energy = (q.transpose(1, 2) @ k).masked_fill(~allowed, float("-inf"))  # (B, N, N)
    out = v @ energy.softmax(dim=-1).transpose(1, 2)
    return x + cca.gamma * out.reshape(b, c, h, w)


def reference_rcca(x: torch.Tensor, cca: CrissCrossAttention) -> torch.Tensor:
    for _ in range(cca.recurrence):  # RCCA: the same module, R times
        x = reference_cca(x, cca)
    return x


def opened(cca: CrissCrossAttention, gamma: float = 1.0) -> CrissCrossAttention:
    with torch.no_grad():
        cca.gamma.fill_(gamma)
    return cca


def test_matches_full_attention_masked_to_row_and_column():
    torch.manual_seed(0)
    cca = opened(create_attention("ccnet", 16), 0.7)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(cca(x), reference_rcca(x, cca))


def test_on_a_single_row_it_is_plain_attention_along_the_row():
    # With H = 1 the column holds only the position itself, already on the row: counted twice,
    # the centre would get double weight.
    torch.manual_seed(0)
    cca = opened(create_attention("ccnet", 16, recurrence=1))
    x = torch.randn(2, 16, 1, 6)
    q, k, v = (conv(x)[:, :, 0].transpose(1, 2) for conv in (cca.query, cca.key, cca.value))
    expected = x + ((q @ k.transpose(1, 2)).softmax(-1) @ v).transpose(1, 2)[:, :, None]
    torch.testing.assert_close(cca(x), expected)


def test_one_pass_sees_the_row_and_column_two_passes_see_everything():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 5, 7)
    moved = x.clone()
    moved[:, :, 0, 0] += 1.0
    one = opened(create_attention("ccnet", 16, recurrence=1))
    changed = (one(moved) - one(x)).abs().sum(1)[0] > 0
    expected = torch.zeros(5, 7, dtype=torch.bool)
    expected[0, :] = expected[:, 0] = True
    assert torch.equal(changed, expected)
    two = opened(create_attention("ccnet", 16))
    assert ((two(moved) - two(x)).abs().sum(1) > 0).all()


def test_paper_defaults():
    cca = CrissCrossAttention(512)
    assert cca.query.out_channels == cca.key.out_channels == 64  # C / 8
    assert cca.value.out_channels == 512
    assert cca.recurrence == 2
    assert CrissCrossAttention(4).query.out_channels == 1


def test_flops_are_those_of_two_criss_cross_passes():
    # At the paper's 1x512x97x97 this count gives 16.54 GFLOPs, its 16.5 for RCCA with R = 2
    # (3 s on one core, so checked here at a small size).
    c, h, w = 64, 13, 11
    n, inner = h * w, c // 8
    per_pass = n * c * (2 * inner + c) + n * (h + w) * inner + n * (h + w) * c  # MACs
    cca = create_attention("ccnet", c)
    assert count_flops(cca, torch.randn(1, c, h, w)) == 2 * 2 * per_pass


def test_bad_recurrence_is_a_clear_error():
    with pytest.raises(ValueError, match="ccnet: recurrence must be >= 1"):
        CrissCrossAttention(16, recurrence=0)


def test_large_inputs_stay_finite_under_bf16_autocast():
    cca = opened(create_attention("ccnet", 16)).eval()
    x = 1e3 * torch.randn(2, 16, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cca(x)
    assert torch.isfinite(out).all()
