"""What every backbone family must do, checked the same way for each."""

import pytest
import torch

from visionattn import create_model
from visionattn.attention import attention_factory
from visionattn.models.halonet import HaloNet

# A small member of each family with a plugin, and the image size it takes.
FAMILIES = {
    "resnet": (lambda: create_model("resnet18", num_classes=4, channels=(16, 16, 32, 32)), 32),
    "mobilenetv2": (lambda: create_model("mobilenetv2_050", num_classes=4, attn="coordatt"), 32),
    "mobilenext": (lambda: create_model("mobilenext_050", num_classes=4, attn="coordatt"), 32),
    "halonet": (lambda: small_halonet(), 64),  # 2x2 blocks on the 2x2 stride-32 map
}


def small_halonet() -> HaloNet:
    return HaloNet(
        layers=(1, 1, 1, 1), channels=(16, 16, 32, 32), block_size=2, halo_size=1,
        num_heads=(2, 2, 2, 2), num_classes=4, attn=attention_factory("se"),
    )  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_it_learns_a_fixed_batch(family):
    """Forty steps on sixteen images: the loss must fall to well below where it started."""
    torch.manual_seed(0)
    build, size = FAMILIES[family]
    model = build()
    images, labels = torch.randn(16, 3, size, size), torch.arange(16) % 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]
