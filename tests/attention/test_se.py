import torch

from visionattn.attention import create_attention
from visionattn.attention.se import SqueezeExcite


def reference_se(x: torch.Tensor, se: SqueezeExcite) -> torch.Tensor:
    """Hu et al., eq. 2-4: z = mean over H, W; s = sigmoid(W2 relu(W1 z)); out = s_c * x_c."""
    w1, b1 = se.fc1.weight[:, :, 0, 0], se.fc1.bias
    w2, b2 = se.fc2.weight[:, :, 0, 0], se.fc2.bias
    z = x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)
    return x * s[:, :, None, None]


def test_matches_the_papers_formula():
    se = create_attention("se", 64)
    x = torch.randn(3, 64, 5, 7)
    torch.testing.assert_close(se(x), reference_se(x, se))


def test_reduced_width_is_channels_over_r_exactly():
    # timm would round 48 / 16 = 3 up to 8; the paper keeps 3.
    assert SqueezeExcite(48).fc1.out_channels == 3
    assert SqueezeExcite(256, reduction=8).fc1.out_channels == 32
