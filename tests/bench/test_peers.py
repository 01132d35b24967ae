"""The benchmark's pairs compute what their notes say: equal parameter counts and, with timm's
(or torchvision's) weights copied into ours, equal outputs; where a note states a difference,
exactly that difference."""

import importlib
from collections.abc import Callable

import pytest
import torch
from timm.layers import EcaModule
from torch import nn

from visionattn import list_attentions
from visionattn.attention.eca import adaptive_kernel_size
from visionattn.bench.peers import MODEL_PEERS, PLUGIN_PEERS
from visionattn.models.pretrained import load_pretrained

State = dict[str, torch.Tensor]
SIZE = (16, 16)
HALO_SIZE = (32, 32)  # 4 x 4 blocks of 8: the four in the middle have their whole halo inside

# Parameters timm's module has beyond ours, by channels; pairs not listed have none.
TIMM_EXTRA_PARAMS: dict[str, Callable[[int], int]] = {
    "cbam": lambda c: 1,  # the spatial BN's weight and bias, for our conv's bias
    "gc": lambda c: 1,  # the attention-logit conv's bias
    "nonlocal": lambda c: c,  # W_z's bias
    "coordatt": lambda c: max(8, c // 32),  # the first conv's bias
    "halo": lambda c: 2 * (2 * 3) * (c // 8),  # 2h unused rows in each of two tables
}
# Pairs whose outputs agree in train and eval mode once timm's weights are copied into ours.
SAME_FUNCTION = ("se", "eca", "nonlocal", "sk", "coordatt")


def _randomize(module: nn.Module) -> nn.Module:
    """Random norm weights and statistics, and no zero parameter: a zero-init residual scale
    or last conv would make ``x + 0 * f(x)`` agree whatever ``f`` computes."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for p in module.parameters():
            if not p.any():
                p.normal_(0, 0.2)
    return module


def _calibrated(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with its BN statistics those of a random batch: with made-up
    statistics a deep net saturates, and its output hardly depends on its weights."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average: the statistics of the one batch
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 64, 64))
    return model.eval()


def _renamed(state: State, renames: dict[str, str]) -> State:
    """``state`` with each key's prefix in ``renames`` replaced."""
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        out[key] = value
    return out


def _fold_bias_into_bn(state: State, bias_key: str, bn_prefix: str) -> State:
    """Drop a conv bias that a BN follows: ``BN(conv(x) + b)`` is ``BN(conv(x))`` with the
    running mean less ``b`` in eval, and the batch mean takes ``b`` away in training."""
    bias = state.pop(bias_key)
    state[f"{bn_prefix}.running_mean"] = state[f"{bn_prefix}.running_mean"] - bias
    return state


def _se(theirs: nn.Module) -> State:
    return theirs.state_dict()


def _cbam(theirs: nn.Module) -> State:
    # Eval-mode BN is an affine map per channel: folded into the conv's weight and bias.
    conv, bn = theirs.spatial.conv.conv, theirs.spatial.conv.bn
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    state = dict(theirs.channel.state_dict())  # fc1, fc2: our names
    state["spatial.weight"] = conv.weight * scale[:, None, None, None]
    state["spatial.bias"] = bn.bias - bn.running_mean * scale
    return {k: v.detach().clone() for k, v in state.items()}


def _gc(theirs: nn.Module) -> State:
    state = theirs.state_dict()
    del state["conv_attn.bias"]  # one logit added to every position: the softmax removes it
    state = _renamed(
        state,
        {
            "conv_attn.": "conv_mask.",
            "mlp_add.fc1.": "transform.0.",
            "mlp_add.norm.": "transform.1.",
            "mlp_add.fc2.": "transform.3.",
        },
    )
    for name in ("weight", "bias"):  # LayerNorm over (hidden, 1, 1) holds them that shape
        state[f"transform.1.{name}"] = state[f"transform.1.{name}"][:, None, None]
    return state


def _nonlocal(theirs: nn.Module) -> State:
    state = _renamed(theirs.state_dict(), {"t.": "theta.", "p.": "phi.", "norm.": "out_norm."})
    state = _fold_bias_into_bn(state, "z.bias", "out_norm")
    state["w_z.weight"] = state.pop("z.weight")
    return state


def _sk(theirs: nn.Module) -> State:
    renames = {"attn.fc_reduce.": "fuse.0.", "attn.bn.": "fuse.1.", "attn.fc_select.": "select."}
    for i in range(len(theirs.paths)):
        renames |= {f"paths.{i}.conv.": f"branches.{i}.0.", f"paths.{i}.bn.": f"branches.{i}.1."}
    state = _renamed(theirs.state_dict(), renames)
    for key in ("fuse.0.weight", "select.weight"):  # 1x1 convs there, Linear layers here
        state[key] = state[key].flatten(1)
    return state


def _coordatt(theirs: nn.Module) -> State:
    return _fold_bias_into_bn(theirs.state_dict(), "conv1.bias", "bn1")


def _halo(theirs: nn.Module) -> State:
    state = theirs.state_dict()
    # timm's kv channels run head by head, [k, v] within each; ours are [all k, all v].
    heads, dim_k, dim_v = theirs.num_heads, theirs.dim_head_qk, theirs.dim_head_v
    k, v = state.pop("kv.weight").unflatten(0, (heads, dim_k + dim_v)).split([dim_k, dim_v], 1)
    state["kv.weight"] = torch.cat([k.flatten(0, 1), v.flatten(0, 1)])
    # timm's tables have 2 * window - 1 rows; the first 2h are displacements no query has.
    unused = 2 * theirs.halo_size
    state["rel_pos.height"] = state.pop("pos_embed.height_rel")[unused:]
    state["rel_pos.width"] = state.pop("pos_embed.width_rel")[unused:]
    return state


TO_OURS: dict[str, Callable[[nn.Module], State]] = {
    "se": _se,
    "eca": _se,
    "cbam": _cbam,
    "gc": _gc,
    "nonlocal": _nonlocal,
    "sk": _sk,
    "coordatt": _coordatt,
    "halo": _halo,
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _copied_pair(name: str, channels: int, size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) with random weights, timm's copied into ours."""
    peer = PLUGIN_PEERS[name]
    theirs = _randomize(peer.theirs(channels, size))
    ours = peer.ours(channels, size)
    ours.load_state_dict(TO_OURS[name](theirs), strict=True)
    return ours, theirs


def _outputs(
    pair: tuple[nn.Module, nn.Module], x: torch.Tensor, train: bool = False
) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(m.train(train)(x) for m in pair)


def test_the_pairs_are_our_plugins_and_the_named_timm_classes():
    assert set(PLUGIN_PEERS) == {"se", "eca", "cbam", "gc", "nonlocal", "sk", "coordatt", "halo"}
    assert set(PLUGIN_PEERS) <= set(list_attentions())
    for name, peer in PLUGIN_PEERS.items():
        module, cls = peer.source.rsplit(".", 1)
        assert type(peer.theirs(64, SIZE)) is getattr(importlib.import_module(module), cls), name


def test_each_note_says_whether_the_function_is_the_same():
    for name, peer in PLUGIN_PEERS.items():
        exact = name in SAME_FUNCTION and name not in TIMM_EXTRA_PARAMS
        assert peer.note.startswith("Same function and parameters") == exact, name
        assert peer.note.startswith("Same function") == (name in SAME_FUNCTION), name
        assert peer.note.startswith("Differs:") == (name not in SAME_FUNCTION), name


# 96 channels: C // 16 = 6 and C // 2 = 48, which timm's defaults would round to 8 and 16.
@pytest.mark.parametrize("channels", [64, 96, 256])
@pytest.mark.parametrize("name", sorted(PLUGIN_PEERS))
def test_parameter_counts_are_equal_or_differ_as_noted(name: str, channels: int):
    peer = PLUGIN_PEERS[name]
    extra = TIMM_EXTRA_PARAMS.get(name, lambda c: 0)(channels)
    ours, theirs = peer.ours(channels, SIZE), peer.theirs(channels, SIZE)
    assert _count(theirs) - _count(ours) == extra


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", SAME_FUNCTION)
def test_same_function_with_timms_weights(name: str, train: bool):
    pair = _copied_pair(name, 64, SIZE)
    ours, theirs = _outputs(pair, torch.randn(2, 64, *SIZE), train)
    torch.testing.assert_close(ours, theirs)


def test_cbam_agrees_in_eval_with_the_bn_folded_and_not_in_training():
    pair = _copied_pair("cbam", 64, SIZE)
    x = torch.randn(2, 64, *SIZE)
    torch.testing.assert_close(*_outputs(pair, x))
    ours, theirs = _outputs(pair, x, train=True)
    assert not torch.allclose(ours, theirs, atol=1e-3)


def test_gc_differs_only_by_the_layernorm_eps():
    ours_module, theirs_module = _copied_pair("gc", 64, SIZE)
    ours_norm, theirs_norm = ours_module.transform[1], theirs_module.mlp_add.norm
    assert (ours_norm.eps, theirs_norm.eps) == (1e-5, 1e-6)
    assert theirs_module.conv_attn.bias.abs().item() > 0  # the bias we dropped was not zero
    theirs_norm.eps = ours_norm.eps
    torch.testing.assert_close(*_outputs((ours_module, theirs_module), torch.randn(2, 64, *SIZE)))


def test_halo_agrees_on_inner_blocks_and_not_on_border_ones():
    pair = _copied_pair("halo", 64, HALO_SIZE)
    ours, theirs = _outputs(pair, torch.randn(2, 64, *HALO_SIZE))
    inner = (slice(None), slice(None), slice(8, 24), slice(8, 24))
    torch.testing.assert_close(ours[inner], theirs[inner])
    corner = (slice(None), slice(None), slice(0, 8), slice(0, 8))
    assert not torch.allclose(ours[corner], theirs[corner], atol=1e-3)


def test_halo_rows_timm_has_beyond_ours_are_never_read():
    theirs = _randomize(PLUGIN_PEERS["halo"].theirs(64, HALO_SIZE)).eval()
    x = torch.randn(2, 64, *HALO_SIZE)
    with torch.no_grad():
        before = theirs(x)
        unused = 2 * theirs.halo_size
        theirs.pos_embed.height_rel[:unused] += 10.0
        theirs.pos_embed.width_rel[:unused] += 10.0
        torch.testing.assert_close(theirs(x), before)


def test_timms_own_eca_kernel_size_agrees_from_8_channels_up():
    for channels in (8, 16, 24, 64, 96, 256, 512, 1024, 2048, 4096):
        assert EcaModule(channels).conv.kernel_size[0] == adaptive_kernel_size(channels), channels
    assert (EcaModule(4).conv.kernel_size[0], adaptive_kernel_size(4)) == (3, 1)


MODEL_PARAMS = {"resnet50": 25_557_032, "mobilenetv2_100": 3_504_872, "seresnet50": 28_088_024}
MODEL_PAIRS = [(name, library) for name, peer in MODEL_PEERS.items() for library in peer.others]


@pytest.mark.parametrize("name", sorted(MODEL_PEERS))
def test_model_parameter_counts_are_equal(name: str):
    peer = MODEL_PEERS[name]
    counts = {"ours": _count(peer.ours(1000))}
    counts |= {library: _count(build(1000)) for library, build in peer.others.items()}
    assert counts == dict.fromkeys(counts, MODEL_PARAMS[name])


@pytest.mark.parametrize(("name", "library"), MODEL_PAIRS)
def test_their_weights_load_into_ours_and_outputs_agree(name: str, library: str, tmp_path):
    peer = MODEL_PEERS[name]
    theirs = _calibrated(_randomize(peer.others[library](10)))
    path = tmp_path / f"{library}_{name}.pt"
    torch.save(theirs.state_dict(), path)
    ours = peer.ours(10)
    load_pretrained(ours, path, name)
    x = torch.randn(2, 3, 64, 64)
    ours_out, theirs_out = _outputs((ours, theirs), x)
    assert not torch.allclose(ours_out[0], ours_out[1], atol=1e-2)  # not a constant
    torch.testing.assert_close(ours_out, theirs_out)
