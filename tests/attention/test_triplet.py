import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.triplet import TripletAttention


def reference_triplet(x: torch.Tensor, ta: TripletAttention, training: bool) -> torch.Tensor:
    """Misra et al., sec. 3: rotate x so that a different axis plays the channels, Z-pool it
    ([max; mean] over that axis), k x k conv, BN, sigmoid, multiply, rotate back; average the
    C-H branch, the C-W branch and the plain spatial (H-W) branch."""

    def branch(rotated, gate):
        pooled = torch.cat([rotated.max(dim=1, keepdim=True).values,
                            rotated.mean(dim=1, keepdim=True)], dim=1)  # fmt: skip
        k = gate.conv.kernel_size[0]
        a = F.conv2d(pooled, gate.conv.weight, padding=k // 2)
        bn = gate.bn
        a = F.batch_norm(a, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                         training=training, eps=bn.eps)  # fmt: skip
        return rotated * torch.sigmoid(a)

    y_ch = branch(x.permute(0, 3, 2, 1), ta.ch).permute(0, 3, 2, 1)  # W as channels: (B, W, H, C)
    y_cw = branch(x.permute(0, 2, 1, 3), ta.cw).permute(0, 2, 1, 3)  # H as channels: (B, H, C, W)
    y_hw = branch(x, ta.hw)
    return (y_ch + y_cw + y_hw) / 3


@pytest.mark.parametrize("training", [True, False])
def test_matches_the_papers_formula_with_every_axis_distinct(training):
    torch.manual_seed(0)
    ta = create_attention("triplet", 5).train(training)
    for gate in (ta.ch, ta.cw, ta.hw):
        gate.bn.running_mean.normal_()
        gate.bn.running_var.uniform_(0.5, 2.0)
        gate.bn.weight.data.normal_()
        gate.bn.bias.data.normal_()
    x = torch.randn(2, 5, 6, 7)  # C, H, W all different: a rotation mix-up cannot pass
    expected = reference_triplet(x, ta, training)
    torch.testing.assert_close(ta(x), expected)


def test_parameters_do_not_depend_on_channels():
    # Three 7x7 convs from two maps to one, three one-channel BNs.
    for channels in (16, 2048):
        assert sum(p.numel() for p in TripletAttention(channels).parameters()) == 3 * (98 + 2)


def test_even_kernel_fails_clearly():
    with pytest.raises(ValueError, match="triplet: kernel_size must be a positive odd number"):
        TripletAttention(64, kernel_size=4)
