"""``ops.attend``: the fused kernel where SDPA has one for the call, query chunks where it would
take its O(N x M)-memory math kernel, equal to the written-out formula either way."""

import pytest
import torch

from visionattn.attention import create_attention, ops
from visionattn.measure import attention_kernels, peak_call_memory


def explicit(q, k, v, bias=None, scale=None):
    logits = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if bias is not None and bias.dtype == torch.bool:
        logits = logits.masked_fill(~bias, float("-inf"))
    elif bias is not None:
        logits = logits + bias
    return logits.softmax(-1) @ v


def inputs(n=37, m=29, d=8, e=24, bias=None):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, n, d), torch.randn(2, 3, m, d), torch.randn(2, 3, m, e)
    tensors = [t.double().requires_grad_() for t in (q, k, v)]
    if bias == "float":  # a learned bias, broadcast over the batch: what a relative position is
        tensors.append(torch.randn(1, 3, n, m, dtype=torch.float64, requires_grad=True))
    elif bias == "rows":  # one bias for every query
        tensors.append(torch.randn(2, 1, 1, m, dtype=torch.float64, requires_grad=True))
    elif bias == "mask":
        mask = torch.rand(1, 1, n, m) > 0.3
        mask[..., 0] = True  # no query without a key
        tensors.append(mask)
    return tensors


@pytest.mark.parametrize("bias", [None, "float", "rows", "mask"])
@pytest.mark.parametrize("chunk", [1, 5, 36, 37, 100])
def test_chunked_attention_and_its_gradients_equal_the_explicit_formula(bias, chunk):
    tensors = inputs(bias=bias)
    grad = torch.randn(2, 3, 37, 24, dtype=torch.float64)
    results = []
    ours = lambda *t: ops.attend(*t, scale=0.3, chunk=chunk)  # noqa: E731
    for fn in (ours, lambda *t: explicit(*t, scale=0.3)):
        for t in tensors:
            t.grad = None
        out = fn(*tensors)
        out.backward(grad)
        results.append([out, *(t.grad for t in tensors if t.requires_grad)])
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("chunk", [None, 1, 7, 40])
def test_a_bias_kept_per_axis_equals_its_expanded_sum(chunk):
    # Keys on a 5 x 6 grid; the bias of query n and key (i, j) is height[n, i] + width[n, j].
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 30, 8, dtype=torch.float64, requires_grad=True) for _ in "qkv")
    height = torch.randn(2, 3, 30, 5, dtype=torch.float64, requires_grad=True)
    width = torch.randn(1, 3, 30, 6, dtype=torch.float64, requires_grad=True)
    expanded = torch.stack(
        [height[..., i] + width[..., j] for i in range(5) for j in range(6)], dim=-1
    )
    grad = torch.randn(2, 3, 30, 8, dtype=torch.float64)
    leaves = (q, k, v, height, width)
    ours = ops.attend(q, k, v, ops.AxisBias(height, width), chunk=chunk)
    ours_grads = torch.autograd.grad(ours, leaves, grad)
    reference = explicit(q, k, v, expanded)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(ours_grads, torch.autograd.grad(reference, leaves, grad), strict=True):
        torch.testing.assert_close(a, b)


def test_a_bias_kept_per_axis_is_never_expanded_whole():
    # 1024 queries on a 32 x 32 grid: expanded, the bias is 1024 x 1024; in 256-row chunks, a
    # quarter of that exists at a time, and the chunked kernel is the one that runs.
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 1024, 16, requires_grad=True) for _ in "qkv")
    height, width = (torch.randn(1, 1, 1024, 32, requires_grad=True) for _ in "hw")

    def step(bias):
        return lambda: ops.attend(q, k, v, bias).sum().backward()

    factored, whole = step(ops.AxisBias(height, width)), step(ops.AxisBias(height, width).dense())
    assert attention_kernels(factored) == ["chunked"]
    cpu = torch.device("cpu")
    assert peak_call_memory(factored, cpu) < peak_call_memory(whole, cpu) / 2


def test_without_autograd_the_chunks_give_the_same_output():
    q, k, v, bias = inputs(bias="float")
    with torch.no_grad():
        torch.testing.assert_close(ops.attend(q, k, v, bias, chunk=4), explicit(q, k, v, bias))


def test_a_call_a_fused_kernel_takes_is_not_chunked():
    q, k, _ = (t.float() for t in inputs(e=8))

    def step():
        ops.attend(q, k, k, chunk=2).sum().backward()

    assert attention_kernels(step) == ["flash"]


def sagan_step(size: int, chunk: int | None = None):
    torch.manual_seed(0)
    module = create_attention("sagan", 64, chunk=chunk)
    with torch.no_grad():
        module.gamma.fill_(1.0)
    x = torch.randn(1, 64, size, size, requires_grad=True)
    return lambda: module(x).sum().backward()


def test_the_default_chunk_keeps_memory_linear_in_the_positions():
    # sagan's value is wider than its query: no fused CPU kernel takes it. At N = 4096 the
    # weights are 64 MiB, and autograd through the math kernel keeps them and their gradient;
    # the default chunks (256 rows) hold 4 MiB of logits at a time.
    cpu = torch.device("cpu")
    whole = 4 * 4096 * 4096
    assert attention_kernels(sagan_step(64)) == ["chunked"]
    chunked = peak_call_memory(sagan_step(64), cpu)
    assert chunked < whole / 4
    unchunked = sagan_step(64, chunk=4096)  # one chunk: the math kernel, unchunked
    assert attention_kernels(unchunked) == ["math"]
    assert peak_call_memory(unchunked, cpu) > whole
    # Four times the positions: about four times the memory (linear), not sixteen (quadratic).
    assert chunked / peak_call_memory(sagan_step(32), cpu) < 6


@pytest.mark.parametrize("name", ["sagan", "danet", "nonlocal", "generalized", "issa"])
@pytest.mark.parametrize("chunk", [0, -4, 2.5, True])
def test_a_chunk_that_cannot_work_is_refused_when_the_plugin_is_built(name, chunk):
    with pytest.raises(ValueError, match=rf"{name}: chunk must be a whole number .* got {chunk}"):
        create_attention(name, 64, chunk=chunk)


@pytest.mark.parametrize("name", ["aa", "bot"])
def test_a_chunk_that_cannot_work_is_refused_by_the_positional_plugins_too(name):
    with pytest.raises(ValueError, match=rf"{name}: chunk must be a whole number"):
        create_attention(name, 64, feat_size=(8, 8), chunk=0)


def test_a_plugin_chunk_reaches_its_attention():
    torch.manual_seed(0)
    x = torch.randn(1, 32, 8, 8)
    chunked = create_attention("sagan", 32, chunk=3)
    whole = create_attention("sagan", 32)
    whole.load_state_dict(chunked.state_dict())
    for module in (chunked, whole):
        with torch.no_grad():
            module.gamma.fill_(1.0)
    assert attention_kernels(lambda: chunked(x).sum().backward()) == ["chunked"]
    torch.testing.assert_close(chunked(x), whole(x))
