"""Generalized (Transformer) attention. Zhu et al., An Empirical Study of Spatial Attention
Mechanisms in Deep Networks, ICCV 2019, https://arxiv.org/abs/1904.05873.

The paper's eq. 2 writes Transformer attention as a sum of four logit terms; ``attention_type``
switches each on or off. ``'1111'`` is the full module; ``'0010'`` (key content only) is the
paper's cheap finding: the same attention for every query, a global context vector.
"""

import torch
import torch.nn.functional as F
from torch import nn

from visionattn.attention import ops
from visionattn.attention.ops import ZeroInitResidual

# Longest wavelength of the sinusoidal relative-position encoding (the Relation Networks
# encoding this group of authors uses; the Transformer's is 10000).
_WAVELENGTH = 1000.0


class GeneralizedAttention(ZeroInitResidual):
    """``x + gamma * W sum_m softmax_k(E1 + E2 + E3 + E4) W'_m x_k`` (paper eq. 1-2), per head m:

    - E1 ``q_m . k_m``: query content and key content;
    - E2 ``q_m . V^R_m R_{k-q}``: query content and relative position;
    - E3 ``u_m . k_m``: key content only (``u_m`` a learned vector);
    - E4 ``v_m . V^R_m R_{k-q}``: relative position only (``v_m`` a learned vector);

    with ``q = U x_q`` and ``k = V^C x_k`` (1x1 convs, no bias), ``R_{k-q}`` the sinusoidal
    encodings of the vertical and horizontal offsets, concatenated, and ``V^R`` a learned
    projection. No ``1 / sqrt(d)`` scaling, as in eq. 2 and the authors' code. Keys and values
    are average-pooled by ``kv_stride`` (ceil mode, so odd maps keep their last row); a pooled
    key sits at the centre of its window. ``gamma`` starts at zero: identity at init.
    """

    def __init__(
        self,
        channels: int,
        *,
        attention_type: str = "1111",
        num_heads: int = 8,
        kv_stride: int = 2,
        position_dim: int | None = None,
        chunk: int | None = None,
    ) -> None:
        super().__init__()
        ops.check_chunk("generalized", chunk)
        self.chunk = chunk
        if (
            not isinstance(attention_type, str)
            or len(attention_type) != 4
            or set(attention_type) - {"0", "1"}
            or attention_type == "0000"
        ):
            raise ValueError(
                "generalized: attention_type must be a string of four 0/1 flags (E1..E4) with at "
                f"least one set, e.g. '1111' or '0010' (quote it in YAML), got {attention_type!r}"
            )
        if channels % num_heads:
            working = [h for h in range(1, channels + 1) if channels % h == 0 and h <= 64]
            raise ValueError(
                f"generalized: num_heads {num_heads} must divide the {channels} channels; "
                f"num_heads that work here: {', '.join(map(str, working))}"
            )
        position_dim = position_dim or channels
        if position_dim % 4:
            raise ValueError(
                "generalized: position_dim must be a multiple of 4 (sin and cos of the vertical "
                f"and horizontal offsets), got {position_dim}"
            )
        e1, e2, e3, e4 = (flag == "1" for flag in attention_type)
        self.terms = (e1, e2, e3, e4)
        self.num_heads = num_heads
        self.kv_stride = kv_stride
        head_dim = channels // num_heads
        self.query = nn.Conv2d(channels, channels, 1, bias=False) if e1 or e2 else None
        self.key = nn.Conv2d(channels, channels, 1, bias=False) if e1 or e3 else None
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        # u_m (E3) and v_m (E4): learned queries that need no query content.
        self.content_query = (
            nn.Parameter(torch.randn(num_heads, head_dim) * head_dim**-0.5) if e3 else None
        )
        self.position_query = (
            nn.Parameter(torch.randn(num_heads, head_dim) * head_dim**-0.5) if e4 else None
        )
        if e2 or e4:
            # V^R acting on [R_y; R_x], split into its vertical and horizontal halves so the
            # logits are computed per axis and summed.
            self.position_y = nn.Linear(position_dim // 2, channels, bias=False)
            self.position_x = nn.Linear(position_dim // 2, channels, bias=False)
            freqs = position_dim // 4
            inverse_wavelengths = _WAVELENGTH ** (-torch.arange(freqs) / freqs)
            self.register_buffer("inverse_wavelengths", inverse_wavelengths, persistent=False)

    def _encode(self, length: int, keys: int, device: torch.device) -> torch.Tensor:
        """Sinusoidal encodings ``(length, keys, position_dim / 2)`` of the offsets ``k - q``
        along one axis from each query row to the centre of each pooled key window."""
        start = torch.arange(keys, device=device, dtype=torch.float32) * self.kv_stride
        end = (start + self.kv_stride).clamp(max=length) - 1
        query = torch.arange(length, device=device, dtype=torch.float32)
        angles = ((start + end) / 2 - query[:, None])[..., None] * self.inverse_wavelengths
        return torch.cat([angles.sin(), angles.cos()], -1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        e1, e2, e3, e4 = self.terms
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        s = self.kv_stride
        kv = x if s == 1 else F.avg_pool2d(x, s, s, ceil_mode=True)
        hk, wk = kv.shape[-2:]
        v = self.value(kv).reshape(b, heads, d, hk * wk).transpose(-1, -2)
        # With E3 alone no logit depends on the query: one attention row serves every position.
        rows = 1 if not (e1 or e2 or e4) else h * w
        q = None
        if self.query is not None:
            q = self.query(x).reshape(b, heads, d, h * w).transpose(-1, -2)

        if self.key is not None:  # E1 + E3 = (q + u) . k
            k = self.key(kv).reshape(b, heads, d, hk * wk).transpose(-1, -2)
            content = q if e1 else 0
            if e3:
                content = content + self.content_query[:, None]
            content = content.expand(b, heads, rows, d)
        else:  # no content term: zero logits, the position bias does it all
            content, k = x.new_zeros(b, heads, rows, 1), x.new_zeros(b, heads, hk * wk, 1)

        bias = None
        if e2 or e4:  # E2 + E4 = (q + v) . V^R R_{k-q}, per axis
            query = q if e2 else 0
            if e4:
                query = query + self.position_query[:, None]
            query = query.reshape(-1, heads, query.shape[-2], d).expand(-1, -1, h * w, -1)
            query = query.reshape(-1, heads, h, w, d)
            rel_y = self.position_y(self._encode(h, hk, x.device)).reshape(h, hk, heads, d)
            rel_x = self.position_x(self._encode(w, wk, x.device)).reshape(w, wk, heads, d)
            bias_y = ops.einsum_fp32("bhyxd,yihd->bhyxi", query, rel_y)
            bias_x = ops.einsum_fp32("bhyxd,xjhd->bhyxj", query, rel_x)
            # Kept per axis, O(N (hk + wk)); attend expands it a chunk of queries at a time.
            bias = ops.AxisBias(bias_y.flatten(2, 3), bias_x.flatten(2, 3))

        out = ops.attend(content.to(v.dtype), k.to(v.dtype), v, bias, scale=1.0, chunk=self.chunk)
        out = out.transpose(-1, -2).reshape(b, c, h if rows > 1 else 1, w if rows > 1 else 1)
        return self.out(out)
