"""Shared pieces of the attention plugins: the softmax-attention call, fp16-safe logits, and
the zero-init residual of the context plugins.

Plugins whose attention is ``softmax(q k^T) v`` call :func:`attend`, which is PyTorch's
``scaled_dot_product_attention``: fused kernels with O(N) memory where the backend has one, and
the scaling done so that fp16 logits do not overflow. Plugins that need the logits themselves
(masked rows, sums over two axes, double normalisation) build them with :func:`einsum_fp32`, in fp32
whatever autocast says.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend
from torch.utils.checkpoint import checkpoint

# Query rows of a chunk when no fused kernel takes a call, unless the value is wider: a chunk's
# logits (rows x M) are then no bigger than the value (M x e) or 256 rows of keys, so memory grows
# as N, and the matmuls keep rows enough to stay efficient.
MIN_CHUNK_ROWS = 256


@dataclass(frozen=True)
class AxisBias:
    """A bias that is a sum of one term per key axis, ``bias[n, (i, j)] = height[n, i] +
    width[n, j]`` for keys on an ``Hk x Wk`` grid (row-major): the relative position logits of
    aa, bot and generalized attention. Kept factored, it costs O(N (Hk + Wk)) memory; each chunk of
    queries expands its own rows only."""

    height: torch.Tensor  # (..., N, Hk)
    width: torch.Tensor  # (..., N, Wk)

    def dense(self) -> torch.Tensor:
        """The ``(..., N, Hk * Wk)`` bias."""
        return (self.height[..., :, None] + self.width[..., None, :]).flatten(-2)

    def __mul__(self, scale: float) -> "AxisBias":
        return AxisBias(self.height * scale, self.width * scale)

    def to(self, dtype: torch.dtype) -> "AxisBias":
        return AxisBias(self.height.to(dtype), self.width.to(dtype))


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | AxisBias | None = None,
    scale: float | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over the last two axes: q ``(..., N, d)``, k
    ``(..., M, d)``, v ``(..., M, e)``, bias broadcastable to ``(..., N, M)`` (a bool bias is a
    mask, True where attention is allowed) or an :class:`AxisBias`. The default scale is
    ``1 / sqrt(d)``.

    Where no fused kernel takes the call (a value wider than the query, a bias that needs a
    gradient, some CPU calls), the queries go in chunks of ``chunk`` rows (default: the value's
    width ``e``, at least ``MIN_CHUNK_ROWS``), each recomputed in backward, so memory is
    O(N x chunk + N x e) instead of O(N x M). An :class:`AxisBias` always goes in chunks (each
    chunk's call takes whichever kernel SDPA has for it): expanded whole, it would be N x M."""
    if isinstance(bias, AxisBias) or (bias is not None and bias.dtype != torch.bool):
        bias = bias.to(q.dtype)
    # The fused kernels need a unit stride along the last axis; a (B, C, H, W) map viewed as
    # (B, N, C) has stride N there, and would silently take the O(N^2)-memory math kernel.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if isinstance(bias, AxisBias):
        rows = chunk or max(MIN_CHUNK_ROWS, v.shape[-1])
        if rows >= q.shape[-2] or torch.compiler.is_compiling():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.dense(), scale=scale)
        with torch.profiler.record_function(CHUNKED):
            return _chunked(q, k, v, bias, scale, rows)
    # A compiler or exporter picks its own kernels; elsewhere SDPA is asked which it would take.
    if torch.compiler.is_compiling() or not _math_kernel(q, k, v, bias, scale):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    rows = chunk or max(MIN_CHUNK_ROWS, v.shape[-1])
    if rows >= q.shape[-2]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    with torch.profiler.record_function(CHUNKED):
        return _chunked(q, k, v, bias, scale, rows)


CHUNKED = "visionattn::chunked_attention"


def _math_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale
) -> bool:
    """Whether SDPA would take its O(N x M)-memory math kernel for this call, autocast included
    (the call runs in autocast's dtype, and the kernels differ by dtype)."""
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = (t.to(dtype) for t in (q, k, v))
        bias = bias if bias is None or bias.dtype == torch.bool else bias.to(dtype)
    choice = torch._fused_sdp_choice(q, k, v, bias, 0.0, False, scale=scale)
    return SDPBackend(choice) == SDPBackend.MATH


def _chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | AxisBias | None,
    scale: float | None,
    rows: int,
) -> torch.Tensor:
    # Splitting (not slicing) gives one backward node that gathers the chunks' gradients at once.
    queries = q.split(rows, dim=-2)
    if isinstance(bias, AxisBias):
        biases = [
            (h, w)
            for h, w in zip(
                _split_rows(bias.height, rows, len(queries)),
                _split_rows(bias.width, rows, len(queries)),
                strict=True,
            )
        ]
    else:
        biases = [(b, None) for b in _split_rows(bias, rows, len(queries))]
    # Without autograd nothing is kept; with it, each chunk's weights are recomputed in backward
    # rather than kept (activation checkpointing per chunk): memory stays one chunk's logits at a
    # time, forward and backward.
    call = checkpoint if torch.is_grad_enabled() else _no_checkpoint
    return torch.cat(
        [
            call(_sdpa, c, k, v, *b, scale, use_reentrant=False)
            for c, b in zip(queries, biases, strict=True)
        ],
        dim=-2,
    )


def _split_rows(bias: torch.Tensor | None, rows: int, chunks: int) -> list:
    """A bias's query rows in chunks; one bias for all queries (or none) serves every chunk."""
    if bias is not None and bias.dim() >= 2 and bias.shape[-2] > 1:
        return list(bias.split(rows, dim=-2))
    return [bias] * chunks


def _no_checkpoint(fn, *args, use_reentrant: bool):
    return fn(*args)


def _sdpa(q, k, v, bias, width, scale) -> torch.Tensor:
    """One chunk's attention; ``width`` set means ``bias`` is an :class:`AxisBias`'s height term,
    expanded here so that only the chunk's rows ever exist densely."""
    if width is not None:
        bias = AxisBias(bias, width).dense()
    with torch.profiler.record_function(CHUNKED):  # also when recomputed in backward
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def check_chunk(plugin: str, chunk: int | None) -> None:
    """Refuse a query chunk that cannot work, when the plugin is built."""
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(
            f"{plugin}: chunk must be a whole number of query rows >= 1, or null to choose it "
            f"from the sizes; got {chunk!r}"
        )


def einsum_fp32(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """``torch.einsum(equation, *operands)`` in fp32 (fp64 stays fp64), also under autocast, for
    attention logits and other products that a half-precision matmul could overflow."""
    with torch.autocast(operands[0].device.type, enabled=False):
        return torch.einsum(equation, *(op.to(_at_least_fp32(op.dtype)) for op in operands))


def softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Softmax computed in fp32 (or fp64), returned as ``dtype`` (default: the input's)."""
    return x.to(_at_least_fp32(x.dtype)).softmax(dim).to(dtype or x.dtype)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32, or as it is where it is already fp32 or fp64."""
    return x.to(_at_least_fp32(x.dtype))


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class ZeroInitResidual(nn.Module):
    """``x + gamma * f(x)`` with a learned scalar ``gamma`` that starts at zero, the residual of
    SAGAN and DANet that the context plugins share: a pretrained backbone computes exactly what
    it computed before the plugin was added. Subclasses write ``context(x)`` = f(x)."""

    kind = "context"

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.context(x)
