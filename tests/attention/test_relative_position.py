import pytest
import torch

from visionattn.attention.relative_position import RelativePosition2d, rel_to_abs


@pytest.mark.parametrize(
    ("queries", "keys", "stride"), [(5, 5, 1), (3, 7, 1), (2, 8, 2), (4, 4, 2)]
)
def test_rel_to_abs_reads_the_displacement_of_each_query_key_pair(queries, keys, stride):
    # Column c of the relative logits holds displacement c - stride * (Lq - 1).
    width = keys + stride * (queries - 1)
    rel = torch.randn(2, 3, queries, width)
    expected = torch.empty(2, 3, queries, keys)
    for i in range(queries):
        for j in range(keys):
            expected[..., i, j] = rel[..., i, j - stride * i + stride * (queries - 1)]
    torch.testing.assert_close(rel_to_abs(rel, keys, stride), expected)


def test_rel_to_abs_rejects_a_table_of_the_wrong_width():
    with pytest.raises(ValueError, match="expected 9"):
        rel_to_abs(torch.randn(5, 10), key_len=5)


def reference_logits(q: torch.Tensor, rel: RelativePosition2d) -> torch.Tensor:
    """AA paper eq. 3: q_i . r^H[j_y - i_y] + q_i . r^W[j_x - i_x], query i at key coordinate
    stride * i, for every (query, key) pair, keys row-major."""
    (qh, qw), (kh, kw), s = rel.query_size, rel.key_size, rel.stride
    out = torch.empty(*q.shape[:-3], qh * qw, kh * kw)
    for yi in range(qh):
        for xi in range(qw):
            for yj in range(kh):
                for xj in range(kw):
                    r = (
                        rel.height[yj - s * yi + s * (qh - 1)]
                        + rel.width[xj - s * xi + s * (qw - 1)]
                    )
                    out[..., yi * qw + xi, yj * kw + xj] = q[..., yi, xi, :] @ r
    return out


@pytest.mark.parametrize(
    ("query", "key", "stride"), [((3, 4), (3, 4), 1), ((2, 2), (6, 6), 1), ((2, 3), (8, 10), 2)]
)
def test_logits_match_the_factorised_relative_formula(query, key, stride):
    rel = RelativePosition2d(5, query, key, stride=stride)
    q = torch.randn(2, 3, *query, 5)
    torch.testing.assert_close(rel(q), reference_logits(q, rel))


def test_every_table_row_is_a_displacement_that_occurs():
    rel = RelativePosition2d(4, (2, 3), (6, 7), stride=2)
    assert rel.height.shape == (6 + 2 * 1, 4) and rel.width.shape == (7 + 2 * 2, 4)
    rel(torch.randn(1, 2, 3, 4)).sum().backward()
    assert (rel.height.grad.abs().sum(1) > 0).all() and (rel.width.grad.abs().sum(1) > 0).all()


def test_logits_stay_fp32_under_half_precision_autocast():
    rel = RelativePosition2d(8, (4, 4), (4, 4))
    q = 1e3 * torch.randn(1, 2, 4, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rel(q)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
