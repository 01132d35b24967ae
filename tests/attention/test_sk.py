import math

import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.sk import SelectiveKernelConv


def _norm(x: torch.Tensor, bn: torch.nn.Module) -> torch.Tensor:
    """Eval-mode batch norm over dim 1 of ``x``, written out."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.reshape(shape)) * scale.reshape(shape) + bn.bias.reshape(shape)


def reference_sk(x: torch.Tensor, m: SelectiveKernelConv) -> torch.Tensor:
    """Paper eq. 1-6 (eval mode): U_i = ReLU(BN(conv_i x)); s = mean_HW(sum_i U_i);
    z = ReLU(BN(W s)); a_i = exp(A_i z) / sum_j exp(A_j z) per channel; V = sum_i a_i U_i."""
    feats = []
    for branch in m.branches:
        conv, bn = branch[0], branch[1]
        u = F.conv2d(
            x,
            conv.weight,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
        )
        feats.append(torch.relu(_norm(u, bn)))
    s = sum(feats).mean((2, 3))
    z = torch.relu(_norm(s @ m.fuse[0].weight.T, m.fuse[1]))
    c = feats[0].shape[1]
    logits = [z @ m.select.weight[i * c : (i + 1) * c].T for i in range(len(feats))]
    exp = [torch.exp(a - torch.stack(logits).amax(0)) for a in logits]
    total = sum(exp)
    return sum(u * (e / total)[:, :, None, None] for u, e in zip(feats, exp, strict=True))


def _randomise_norms(m: SelectiveKernelConv) -> SelectiveKernelConv:
    with torch.no_grad():
        for bn in [b[1] for b in m.branches] + [m.fuse[1]]:
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.normal_(1, 0.2)
            bn.bias.normal_(0, 0.2)
        m.select.weight.normal_(0, 1)  # selection far from uniform
    return m.eval()


@pytest.mark.parametrize(
    "stride, out_channels, groups, dilations",
    [(1, None, 32, (1, 2)), (2, 64, 32, (1, 2)), (1, None, 1, (1, 2, 3))],
)
def test_matches_the_papers_formula(stride, out_channels, groups, dilations):
    m = SelectiveKernelConv(
        32, out_channels=out_channels, stride=stride, groups=groups, dilations=dilations
    )
    m = _randomise_norms(m)
    x = torch.randn(3, 32, 9, 7)
    out = m(x)
    assert out.shape == (3, out_channels or 32, math.ceil(9 / stride), math.ceil(7 / stride))
    torch.testing.assert_close(out, reference_sk(x, m), atol=1e-5, rtol=1e-4)


def test_defaults_from_the_paper():
    m = create_attention("sk", 256)
    assert m.kind == "conv"
    assert [b[0].dilation for b in m.branches] == [(1, 1), (2, 2)]  # 3x3 and "5x5" fields
    assert all(b[0].groups == 32 for b in m.branches)  # SK[M=2, G=32, r=16]
    assert m.fuse[0].out_features == 32  # d = max(256 / 16, L = 32)
    assert SelectiveKernelConv(1024).fuse[0].out_features == 64
    assert m.select.out_features == 2 * 256


def test_bad_sizes_give_clear_errors():
    with pytest.raises(ValueError, match=r"groups 32 must divide both 48 input.*1, 2, 3, 4, 6"):
        SelectiveKernelConv(48, out_channels=96)
    with pytest.raises(ValueError, match="two or more branches"):
        SelectiveKernelConv(32, dilations=(1,))


def test_train_mode_and_channels_last():
    m = SelectiveKernelConv(32, groups=4)
    x = torch.randn(2, 32, 2, 2, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    m.eval()
    x = torch.randn(2, 32, 6, 5)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x))
