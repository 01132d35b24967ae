import pytest
import torch
import torch.nn.functional as F

from visionattn.attention import create_attention
from visionattn.attention.external import ExternalAttention


def reference_external(x: torch.Tensor, ea: ExternalAttention) -> torch.Tensor:
    """Guo et al., eq. 5-6 and the double normalisation (eq. 9-10): a = Q M_k^T,
    a_hat = exp(a) / sum over the N positions, attn = a_hat / sum over the S slots,
    out = attn M_v; between the unit's two 1x1 convs."""
    q = F.conv2d(x, ea.query.weight, ea.query.bias).flatten(2).transpose(1, 2)  # (B, N, C)
    a = q @ ea.memory_key.weight.T  # (B, N, S)
    a_hat = a.exp() / a.exp().sum(dim=1, keepdim=True)
    attn = a_hat / a_hat.sum(dim=2, keepdim=True)
    out = (attn @ ea.memory_value.weight.T).transpose(1, 2).reshape(x.shape)
    return x + ea.gamma * F.conv2d(out, ea.proj.weight, ea.proj.bias)


def opened(ea: ExternalAttention) -> ExternalAttention:
    with torch.no_grad():
        ea.gamma.fill_(1.0)
    return ea


def test_matches_the_double_normalised_memory_attention():
    torch.manual_seed(0)
    ea = opened(create_attention("external", 16))
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(ea(x), reference_external(x, ea))


def test_paper_defaults():
    ea = ExternalAttention(256)
    assert ea.memory_key.weight.shape == (64, 256)  # M_k: S x d, S = 64
    assert ea.memory_value.weight.shape == (256, 64)
    assert ea.memory_key.bias is None and ea.memory_value.bias is None


def test_bad_memory_size_is_a_clear_error():
    with pytest.raises(ValueError, match="external: memory_size must be >= 1"):
        ExternalAttention(16, memory_size=0)


def test_extreme_logits_give_no_nan():
    # exp underflows for every slot of some positions; a plain L1 step would divide 0 by 0.
    ea = opened(create_attention("external", 16)).eval()
    x = 1e5 * torch.randn(2, 16, 6, 5)
    assert torch.isfinite(ea(x)).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(ea(x / 100)).all()
