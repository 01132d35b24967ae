import pytest
import torch
import torch.nn.functional as F

import visionattn
from visionattn.attention import create_attention
from visionattn.attention.cbam import CBAM


def reference_cbam(x: torch.Tensor, cbam: CBAM) -> torch.Tensor:
    """Woo et al., eq. 1-3: channel attention from avg- and max-pooled vectors through one shared
    MLP, then a spatial map from a k x k conv over [mean over C; max over C]."""
    w0, b0 = cbam.fc1.weight[:, :, 0, 0], cbam.fc1.bias
    w1, b1 = cbam.fc2.weight[:, :, 0, 0], cbam.fc2.bias

    def mlp(v):
        return torch.relu(v @ w0.T + b0) @ w1.T + b1

    avg = x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    mx = x.flatten(2).max(dim=2).values
    x = x * torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    pooled = torch.stack([x.mean(dim=1), x.max(dim=1).values], dim=1)
    k = cbam.spatial.kernel_size[0]
    spatial = F.conv2d(pooled, cbam.spatial.weight, cbam.spatial.bias, padding=k // 2)
    return x * torch.sigmoid(spatial)


def test_matches_the_papers_formula():
    cbam = create_attention("cbam", 32, reduction=4)
    x = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(cbam(x), reference_cbam(x, cbam))


def test_defaults_are_the_papers():
    cbam = CBAM(256)
    assert cbam.fc1.out_channels == 256 // 16
    assert cbam.spatial.kernel_size == (7, 7) and cbam.spatial.in_channels == 2


def test_cbam_resnet50_has_the_papers_parameter_count():
    model = visionattn.create_model("resnet50", attn="cbam")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 28.09


def test_even_kernel_fails_clearly():
    with pytest.raises(ValueError, match=r"cbam: kernel_size must be a positive odd number.*got 6"):
        CBAM(64, kernel_size=6)
