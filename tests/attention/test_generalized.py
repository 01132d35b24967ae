import math

import pytest
import torch

from visionattn.attention import create_attention
from visionattn.attention.generalized import GeneralizedAttention


def sinusoid(offset: torch.Tensor, dims: int) -> torch.Tensor:
    """[sin(t / 1000^(i / F)), cos(t / 1000^(i / F))], i < F = dims / 2, for each offset t."""
    freqs = dims // 2
    angles = offset[..., None] / 1000.0 ** (torch.arange(freqs) / freqs)
    return torch.cat([angles.sin(), angles.cos()], -1)


def reference_generalized(x: torch.Tensor, m: GeneralizedAttention) -> torch.Tensor:
    """Paper eq. 1-2 with dense (query, key) matrices: keys and values are the means of the
    kv_stride x kv_stride windows, each placed at its window's centre; R_{k-q} is the encoding
    of the vertical offset concatenated with that of the horizontal one; per head m the logit
    is q.k + q.V^R R + u.k + v.V^R R over the terms switched on."""
    e1, e2, e3, e4 = m.terms
    b, c, h, w = x.shape
    heads, d, s = m.num_heads, c // m.num_heads, m.kv_stride
    queries = [(i, j) for i in range(h) for j in range(w)]
    windows = [
        (range(i, min(i + s, h)), range(j, min(j + s, w)))
        for i in range(0, h, s)
        for j in range(0, w, s)
    ]
    xq = x.flatten(2).transpose(1, 2)  # (B, N, C)
    xk = torch.stack([x[:, :, list(r)][:, :, :, list(cl)].mean((2, 3)) for r, cl in windows], 1)
    centres = torch.tensor([[sum(r) / len(r), sum(cl) / len(cl)] for r, cl in windows])
    offsets = centres[None] - torch.tensor(queries, dtype=torch.float32)[:, None]  # (N, M, 2)

    def project(conv, feats):
        return (feats @ conv.weight[:, :, 0, 0].T).reshape(b, -1, heads, d)

    logits = torch.zeros(b, heads, len(queries), len(windows))
    q = project(m.query, xq) if m.query is not None else None
    k = project(m.key, xk) if m.key is not None else None
    if e2 or e4:
        p = m.position_y.in_features
        encoding = torch.cat([sinusoid(offsets[..., 0], p), sinusoid(offsets[..., 1], p)], -1)
        v_r = torch.cat([m.position_y.weight, m.position_x.weight], 1)  # (C, position_dim)
        rel = (encoding @ v_r.T).reshape(len(queries), len(windows), heads, d)
    if e1:
        logits += torch.einsum("bnhd,bmhd->bhnm", q, k)
    if e2:
        logits += torch.einsum("bnhd,nmhd->bhnm", q, rel)
    if e3:
        logits += torch.einsum("hd,bmhd->bhm", m.content_query, k)[:, :, None]
    if e4:
        logits += torch.einsum("hd,nmhd->hnm", m.position_query, rel)
    attention = torch.softmax(logits, -1)
    values = project(m.value, xk)
    out = torch.einsum("bhnm,bmhd->bnhd", attention, values).reshape(b, h * w, c)
    out = out @ m.out.weight[:, :, 0, 0].T
    return x + m.gamma * out.transpose(1, 2).reshape(b, c, h, w)


def _opened(m: GeneralizedAttention) -> GeneralizedAttention:
    with torch.no_grad():
        m.gamma.fill_(1.0)
    return m


@pytest.mark.parametrize("attention_type", ["1111", "0010", "1000", "0101", "0110"])
@pytest.mark.parametrize("kv_stride", [2, 1])
@pytest.mark.parametrize("chunk", [None, 4])  # 4: query chunks, the position logits per axis
def test_matches_the_papers_formula(attention_type, kv_stride, chunk):
    torch.manual_seed(0)
    m = GeneralizedAttention(
        32, attention_type=attention_type, num_heads=4, kv_stride=kv_stride, chunk=chunk
    )
    m = _opened(m)
    x = torch.randn(2, 32, 5, 7)  # odd: the last pooled row and column are cut windows
    torch.testing.assert_close(m(x), reference_generalized(x, m), atol=1e-5, rtol=1e-4)


def test_identity_at_init_and_defaults_from_the_paper():
    m = create_attention("generalized", 64)
    x = torch.randn(2, 64, 6, 6)
    assert torch.equal(m(x), x)
    assert m.kind == "context" and m.terms == (True, True, True, True)
    assert m.num_heads == 8 and m.kv_stride == 2
    assert m.position_y.in_features == 64 // 2  # position_dim defaults to the channels


def test_key_content_only_is_one_context_vector_for_every_position():
    m = GeneralizedAttention(32, attention_type="0010", num_heads=4)
    assert m.query is None and m.position_query is None and not hasattr(m, "position_y")
    assert m.context(torch.randn(2, 32, 6, 5)).shape == (2, 32, 1, 1)


def test_bad_settings_give_clear_errors():
    for bad in ("0000", "11", "12ab", 1111):
        with pytest.raises(ValueError, match=r"four 0/1 flags.*quote it in YAML"):
            GeneralizedAttention(32, attention_type=bad)
    with pytest.raises(ValueError, match=r"num_heads 8 must divide the 36 channels.*1, 2, 3, 4, 6"):
        GeneralizedAttention(36)
    with pytest.raises(ValueError, match="position_dim must be a multiple of 4"):
        GeneralizedAttention(32, position_dim=30)


def test_large_inputs_under_bf16_autocast_stay_finite():
    m = _opened(GeneralizedAttention(32, num_heads=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.randn(2, 32, 6, 6) * 1000)
    assert torch.isfinite(out).all()


def test_tiny_maps_and_channels_last():
    m = _opened(GeneralizedAttention(32, num_heads=4))
    for size in [(1, 1), (2, 2), (3, 1)]:
        assert m(torch.randn(2, 32, *size)).shape == (2, 32, *size)
    x = torch.randn(2, 32, 5, 6)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x))
    assert math.isfinite(m(x).sum().item())
