"""GSoP: Global Second-order Pooling. Gao, Xie, Wang and Li, "Global Second-order Pooling
Convolutional Networks", CVPR 2019, https://arxiv.org/abs/1811.12006.

The channel-attention GSoP block of GSoP-Net1. The paper puts one block at the end of each
stage of ResNet-50: see configs/attn/gsop.yaml.
"""

import torch
from torch import nn

from visionattn.attention import ops


class GlobalSecondOrderPooling(nn.Module):
    """``y = x * sigmoid(W RC(BN_row(Cov(relu(BN(conv1x1(x)))))))``:

    - squeeze: a 1x1 conv (+ BN, ReLU) reduces C to ``dim`` channels, whose ``dim x dim``
      covariance over the H x W positions (centred, divided by HW) is normalised row by row
      (a BN that treats each row as a channel);
    - excitation: a row-wise convolution (row i of the covariance -> ``expansion`` outputs, its
      own weights per row: a grouped conv) gives a ``expansion * dim`` vector, a 1x1 conv ``W``
      maps it to C channel weights, a sigmoid.

    The covariance and the excitation run in fp32, also under autocast (the covariance is
    quadratic in x, like attention logits). The reduce conv has no bias: the BN after it cancels
    it.

    Args:
        channels: input channels C.
        dim: the reduced width c whose covariance is taken (the paper: 128).
        expansion: outputs of the row-wise conv per covariance row (the paper: 4).
    """

    kind = "gate"

    def __init__(self, channels: int, *, dim: int = 128, expansion: int = 4) -> None:
        super().__init__()
        if dim < 1 or expansion < 1:
            raise ValueError(
                f"gsop: dim and expansion must be at least 1, got dim={dim}, expansion={expansion}"
            )
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )
        self.row_norm = nn.BatchNorm2d(dim)
        self.row_conv = nn.Conv2d(dim, expansion * dim, kernel_size=(dim, 1), groups=dim)
        self.fc = nn.Conv2d(expansion * dim, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.reduce(x).flatten(2)  # (B, c, HW)
        z = z - z.mean(2, keepdim=True)
        cov = ops.einsum_fp32("bin,bjn->bij", z, z) / z.shape[2]  # (B, c, c), fp32
        # The excitation is small (B x c x c); it stays in fp32 under autocast, where a covariance
        # of large features would overflow fp16 before the row BN has learned its scale.
        with torch.autocast(x.device.type, enabled=False):
            rows = self.row_norm(cov.to(self.row_norm.weight.dtype).unsqueeze(-1))  # rows: channels
            weights = self.fc(self.row_conv(rows)).sigmoid()  # (B, C, 1, 1)
        return x * weights.to(x.dtype)
