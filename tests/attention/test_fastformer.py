import math

import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.fastformer import Fastformer


def reference_fastformer(x: torch.Tensor, ff: Fastformer) -> torch.Tensor:
    """Wu et al., eq. 3-7, head by head: alpha_i = softmax_i(w_q . q_i / sqrt(d)), global query
    q = sum alpha_i q_i, p_i = q * k_i, beta_i = softmax_i(w_k . p_i / sqrt(d)), global key
    k = sum beta_i p_i, u_i = k * v_i; output W_r u_i + q_i."""
    b, c, h, w = x.shape
    q, k, v = (
        F.conv2d(x, conv.weight, conv.bias).flatten(2).transpose(1, 2)  # (B, N, C)
        for conv in (ff.query, ff.key, ff.value)
    )
    d = c // ff.heads
    heads = []
    for head in range(ff.heads):
        part = slice(head * d, (head + 1) * d)
        qh, kh, vh = q[..., part], k[..., part], v[..., part]
        alpha = (qh @ ff.query_score[head, 0] / math.sqrt(d)).exp()
        global_q = (alpha[..., None] * qh).sum(1) / alpha.sum(1, keepdim=True)
        p = global_q[:, None] * kh
        beta = (p @ ff.key_score[head, 0] / math.sqrt(d)).exp()
        global_k = (beta[..., None] * p).sum(1) / beta.sum(1, keepdim=True)
        heads.append(global_k[:, None] * vh)
    u = torch.cat(heads, dim=-1).transpose(1, 2).reshape(b, c, h, w)
    r = F.conv2d(u, ff.transform.weight, ff.transform.bias)
    return x + ff.gamma * (r + q.transpose(1, 2).reshape(b, c, h, w))


def opened(ff: Fastformer) -> Fastformer:
    with torch.no_grad():
        ff.gamma.fill_(1.0)
    return ff


@pytest.mark.parametrize("heads", [1, 4])
def test_matches_the_papers_additive_attention(heads):
    torch.manual_seed(0)
    ff = opened(create_attention("fastformer", 16, heads=heads))
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(ff(x), reference_fastformer(x, ff))


def test_every_position_reaches_every_other():
    torch.manual_seed(0)
    ff = opened(create_attention("fastformer", 16, heads=4)).eval()
    x = torch.randn(1, 16, 5, 7)
    moved = x.clone()
    moved[:, :, 0, 0] += 1.0
    assert ((ff(moved) - ff(x)).abs().sum(1) > 0).all()


def test_paper_defaults():
    ff = Fastformer(256)
    assert ff.heads == 16
    assert ff.query_score.shape == ff.key_score.shape == (16, 1, 16)  # one w per head, d = 16


def test_bad_heads_is_a_clear_error():
    with pytest.raises(
        ValueError, match="fastformer: heads 16 must divide the 24 channels; heads that work here"
    ):
        Fastformer(24)


def test_large_inputs_stay_finite_under_bf16_autocast():
    ff = opened(create_attention("fastformer", 16, heads=4)).eval()
    x = 1e3 * torch.randn(2, 16, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ff(x)
    assert torch.isfinite(out).all()
