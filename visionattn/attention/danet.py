"""Dual attention. Fu, Liu, Tian, Li, Bao, Fang and Lu, Dual Attention Network for Scene
Segmentation, CVPR 2019, https://arxiv.org/abs/1809.02983.

Two branches on the same input, summed (the paper's Sec. 3.2-3.4):

- position: ``softmax(q k^T) v`` over the ``H * W`` positions, q and k 1x1 convs to ``C / 8``,
  v a 1x1 conv to ``C``, no ``1 / sqrt(d)`` (as SAGAN);
- channel: the ``C x C`` affinity ``E = A A^T`` of the flattened input ``A`` (``C x HW``), rows
  normalised as the authors' code does, ``softmax(rowmax(E) - E)`` (that is ``softmax(-E)``:
  the paper's Eq. 3 prints ``softmax(E)``), then ``E A``. It has no weights, and takes its
  channel count from the input (a known port hard-codes it).

The paper gives each branch its own zero-init scale (alpha, beta). Here one zero-init ``gamma``
scales their sum, so ``gamma`` alone opens the plugin; nothing is lost, since the value conv of
the position branch can learn any ratio alpha / beta. The 3x3 conv-BN-ReLU layers around each
branch in the paper's head are left out: they reduce 2048 channels to 512 and adapt the features
for the segmentation classifier (head, not attention), and inside a backbone each would cost
``9 C^2`` weights (9.4M at C = 1024) per plugin.
"""

import torch

from visionattn.attention import ops
from visionattn.attention.sagan import SelfAttention


class DualAttention(SelfAttention):
    """``x + gamma * (position(x) + channel(x))``; gamma starts at zero. The position branch is
    SAGAN's self-attention, weights and all."""

    plugin = "danet"

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return self.position(x) + self.channel(x)

    def position(self, x: torch.Tensor) -> torch.Tensor:
        """The position attention module (PAM) without its residual."""
        return super().context(x)

    @staticmethod
    def channel(x: torch.Tensor) -> torch.Tensor:
        """The channel attention module (CAM) without its residual. The logits are sums over
        every position, beyond fp16's range on large maps: they are computed in fp32. The
        fused attention kernels would need a head width of ``H * W``, so no ``ops.attend``."""
        a = x.flatten(2)  # (B, C, N)
        energy = ops.einsum_fp32("bcn,bdn->bcd", a, a)
        attention = ops.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1, dtype=a.dtype)
        return (attention @ a).reshape(x.shape)
