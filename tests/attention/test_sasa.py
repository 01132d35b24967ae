import pytest
import torch

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.sasa import StandAloneSelfAttention


def reference_sasa(x: torch.Tensor, sasa: StandAloneSelfAttention, stride: int) -> torch.Tensor:
    """SASA eq. 3, pixel by pixel: y_ij = sum_ab softmax_ab(q_ij.k_ab + q_ij.r_{a-i,b-j}) v_ab over
    the k x k window inside the map, r = [row embedding (first half), column embedding (second
    half)], split across heads like the keys; no 1/sqrt(d). Then mean over each stride x stride
    cell (the in-map pixels of a cell at the border)."""
    batch, _, height, width = x.shape
    dim, heads, k = sasa.out_channels, sasa.num_heads, sasa.kernel_size
    d, r = dim // heads, k // 2
    w = sasa.qkv.weight[:, :, 0, 0]
    q, keys, values = (
        torch.einsum("oc,bchw->bohw", w[i * dim : (i + 1) * dim], x) for i in range(3)
    )
    y = torch.zeros(batch, dim, height, width)
    for i in range(height):
        for j in range(width):
            window = [
                (a, b)
                for a in range(i - r, i + r + 1)
                for b in range(j - r, j + r + 1)
                if 0 <= a < height and 0 <= b < width
            ]
            emb = torch.stack(
                [torch.cat([sasa.rel_rows[a - i + r], sasa.rel_cols[b - j + r]]) for a, b in window]
            )
            for n in range(heads):
                ch = slice(n * d, (n + 1) * d)
                kj = torch.stack([keys[:, ch, a, b] for a, b in window], 1)
                vj = torch.stack([values[:, ch, a, b] for a, b in window], 1)
                qi = q[:, ch, i, j]
                logits = torch.einsum("bd,bmd->bm", qi, kj) + qi @ emb[:, ch].T
                y[:, ch, i, j] = torch.einsum("bm,bmd->bd", logits.softmax(1), vj)
    out = torch.zeros(batch, dim, -(-height // stride), -(-width // stride))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            cell = y[:, :, i * stride : (i + 1) * stride, j * stride : (j + 1) * stride]
            out[:, :, i, j] = cell.mean((2, 3))
    return out


@pytest.mark.parametrize(
    ("kernel", "stride", "size"), [(3, 1, (5, 4)), (5, 2, (5, 7)), (7, 1, (4, 4))]
)
def test_equals_the_papers_windowed_attention(kernel, stride, size):
    torch.manual_seed(0)
    sasa = StandAloneSelfAttention(
        6, out_channels=8, stride=stride, kernel_size=kernel, num_heads=2
    )
    x = torch.randn(2, 6, *size)
    torch.testing.assert_close(sasa(x), reference_sasa(x, sasa, stride), rtol=1e-4, atol=1e-5)


def test_paper_defaults():
    sasa = create_attention("sasa", 64)
    assert (sasa.kernel_size, sasa.num_heads) == (7, 8)
    # Half the channels carry the row offset, half the column offset.
    assert sasa.rel_rows.shape == sasa.rel_cols.shape == (7, 32)


def test_sasa_resnet50_has_29_percent_fewer_parameters():
    # Abstract: replacing every spatial conv of ResNet-50 gives 29% fewer parameters
    # (18,038,632 here against 25,557,032; the paper's 18.0M keeps a conv stem too).
    def count(model):
        return sum(p.numel() for p in model.parameters())

    sasa = count(visionattn.create_model("resnet50", attn="sasa"))
    assert round(1 - sasa / count(visionattn.create_model("resnet50")), 2) == 0.29


def test_window_positions_outside_the_map_take_no_weight():
    # On a 1x1 map the only position in the window is the pixel itself: out = v.
    sasa = StandAloneSelfAttention(8, num_heads=2)
    x = torch.randn(3, 8, 1, 1)
    v = torch.einsum("oc,bchw->bohw", sasa.qkv.weight[16:, :, 0, 0], x)
    torch.testing.assert_close(sasa(x), v)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        StandAloneSelfAttention(16, kernel_size=4)
    with pytest.raises(ValueError, match="heads that work: 1, 2, 3, 4, 6, 12"):
        StandAloneSelfAttention(12, num_heads=8)


def test_large_inputs_stay_finite_under_bf16_autocast():
    sasa = StandAloneSelfAttention(16, num_heads=4, stride=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sasa(1e3 * torch.randn(2, 16, 7, 5))
    assert out.shape == (2, 16, 4, 3) and torch.isfinite(out).all()
