import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.ccnet import CrissCrossAttention, CrissCrossPass
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


def gradients(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, forward) -> list:
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    forward(x).backward(grad)
    return [x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (1, 16, 1, 6), (1, 16, 6, 1), (1, 16, 1, 1)])
def test_its_backward_equals_autograd_through_the_masked_full_attention(shape):
    torch.manual_seed(0)
    cca = opened(create_attention("ccnet", 16), 0.7).double()
    x, grad = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    ours = gradients(cca, x, grad, cca)
    reference = gradients(cca, x, grad, lambda t: reference_rcca(t, cca))
    assert all(g is not None for g in ours)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)


def test_one_pass_passes_gradcheck():
    torch.manual_seed(0)
    x, q, k = torch.randn(2, 6, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    value_weight, value_bias, gamma = torch.randn(6, 6, 1, 1), torch.randn(6), torch.ones(1)
    inputs = [t.double().requires_grad_() for t in (x, q, k, value_weight, value_bias, gamma)]
    assert torch.autograd.gradcheck(CrissCrossPass.apply, inputs)


def test_training_keeps_q_k_and_the_pass_inputs_only():
    # The memory the paper claims: what autograd keeps is each pass's input, q and k, and one
    # log-sum-exp a position, not v, the (H + W)-wide weights or any C-wide intermediate.
    torch.manual_seed(0)
    c, h, w = 64, 12, 10
    cca = opened(create_attention("ccnet", c), 0.5)
    x = torch.randn(2, c, h, w, requires_grad=True)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = cca(x)
    map_bytes, qk_bytes, lse_bytes = x.nbytes, x.nbytes // 8, x.nbytes // c
    parameters = {p.untyped_storage().data_ptr() for p in cca.parameters()}
    kept = {ptr: n for ptr, n in kept.items() if ptr not in parameters}
    # pass 1 keeps x; pass 2 its input; each pass its q, k and log-sum-exp
    assert sum(kept.values()) == 2 * (map_bytes + 2 * qk_bytes + lse_bytes)
    out.sum().backward()
    assert x.grad is not None and cca.value.weight.grad is not None


def test_bf16_autocast_gradients_follow_fp32():
    torch.manual_seed(0)
    cca = opened(create_attention("ccnet", 16), 0.7)
    x, grad = torch.randn(2, 16, 6, 5), torch.randn(2, 16, 6, 5)
    exact = gradients(cca, x, grad, cca)

    def autocast(t: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return cca(t)

    # bf16 keeps 8 bits: errors on the scale of the largest gradient, not of each entry (the
    # key bias's exact gradient is 0: a constant over a softmax's terms).
    scale = max(g.abs().max().item() for g in exact)
    for a, b in zip(gradients(cca, x, grad, autocast), exact, strict=True):
        assert a.dtype == b.dtype and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.02 * scale)
