import torch

from visionattn.attention import create_attention
from visionattn.attention.caa import ChannelizedAxialAttention


def project(x: torch.Tensor, conv) -> torch.Tensor:
    """A 1x1 conv from its weights, (B, C, H, W) -> (B, H, W, C'): position-major."""
    return torch.einsum("oc,bchw->bhwo", conv.weight[:, :, 0, 0], x) + conv.bias


def gate(pooled: torch.Tensor, mlp) -> torch.Tensor:
    """sigmoid(W2 relu(W1 p)), no biases."""
    return torch.sigmoid(torch.relu(pooled @ mlp.fc1.weight.T) @ mlp.fc2.weight.T)


def reference_caa(x: torch.Tensor, caa: ChannelizedAxialAttention) -> torch.Tensor:
    """Huang et al.: the intermediate products alpha and beta built in full (what the paper's
    grouped vectorisation computes group by group), channel attention on each, then the sums.
    Indices: output position (i, j) = (row, column); m runs over rows, n over columns."""
    v = project(x, caa.value)  # (B, H, W, C)
    q, k = project(x, caa.query_column), project(x, caa.key_column)
    a_col = torch.softmax(torch.einsum("bijd,bmjd->bijm", q, k), dim=-1)  # over the rows m
    alpha = a_col[..., None] * v.permute(0, 2, 1, 3)[:, None]  # (B, i, j, m, C): A(i,j,m) V(m,j)
    s_col = gate(alpha.mean(dim=(2, 3)), caa.gate_column)  # (B, i, C): mean over j and m
    y_col = (s_col[:, :, None, None] * alpha).sum(3)  # (B, i, j, C)
    q, k = project(x, caa.query_row), project(x, caa.key_row)
    a_row = torch.softmax(torch.einsum("bijd,bind->bijn", q, k), dim=-1)  # over the columns n
    beta = a_row[..., None] * y_col[:, :, None]  # (B, i, j, n, C): A(i,j,n) Y_col(i,n)
    s_row = gate(beta.mean(dim=(1, 3)), caa.gate_row)  # (B, j, C): mean over i and n
    y = (s_row[:, None, :, None] * beta).sum(3)  # (B, i, j, C)
    return x + caa.gamma * y.permute(0, 3, 1, 2)


def test_matches_the_papers_formula_with_the_products_built_in_full():
    torch.manual_seed(0)
    caa = create_attention("caa", 32)
    torch.nn.init.ones_(caa.gamma)
    x = torch.randn(2, 32, 5, 7)
    out = caa(x)
    torch.testing.assert_close(out, reference_caa(x, caa))
    assert (out - x).abs().mean() > 0.01


def test_the_channel_weights_change_the_output():
    # With zeros in the MLPs' last layers every channel weight is sigmoid(0) = 1/2: the output
    # is parallel axial attention scaled by 1/4. The reference still holds, and the gates of
    # the random init change the output.
    torch.manual_seed(0)
    caa = ChannelizedAxialAttention(16)
    torch.nn.init.ones_(caa.gamma)
    x = torch.randn(2, 16, 6, 4)
    before = caa(x)
    with torch.no_grad():
        for mlp in (caa.gate_column, caa.gate_row):
            torch.nn.init.zeros_(mlp.fc2.weight)
    torch.testing.assert_close(reference_caa(x, caa), caa(x))
    assert not torch.allclose(before, caa(x))


def test_paper_defaults_and_identity_at_init():
    caa = ChannelizedAxialAttention(64)
    assert caa.kind == "context" and caa.gamma.item() == 0
    assert caa.query_column.out_channels == caa.key_row.out_channels == 8  # C / 8
    assert caa.gate_column.fc1.out_features == caa.gate_row.fc1.out_features == 16  # C / 4
    assert caa.gate_column.fc1.bias is None and caa.gate_column.fc2.bias is None
    x = torch.randn(2, 64, 3, 5)
    torch.testing.assert_close(caa(x), x, rtol=0, atol=0)


def test_huge_inputs_under_half_precision_stay_finite():
    caa = ChannelizedAxialAttention(16)
    torch.nn.init.ones_(caa.gamma)
    x = torch.randn(2, 16, 8, 8) * 1000
    for dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            assert torch.isfinite(caa(x)).all(), dtype


def test_works_down_to_a_single_position():
    caa = ChannelizedAxialAttention(8)
    for size in [(1, 1), (2, 2), (1, 3)]:
        assert caa(torch.randn(2, 8, *size)).shape == (2, 8, *size)
