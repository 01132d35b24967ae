"""What every plugin must do, whatever its paper: checked for all of them, by name.

Each plugin's own file checks it against its paper's formula; this one checks the contract the
backbones and the training loop rely on.
"""

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import visionattn
from visionattn.attention import KINDS, attention_factory, create_attention, get_attention
from visionattn.attention.halo import HaloAttention
from visionattn.models.halonet import HaloNet

CONFIGS = Path(__file__).parents[2] / "configs" / "attn"


PLUGINS = visionattn.list_attentions()
SIZE = (8, 6)  # not square, so that an H / W mix-up shows

# Knobs that let a plugin run on the tiny maps of these tests (its defaults are sized for
# ImageNet features: a 7x7 window, 8x8 halo blocks, 8 heads).
TINY: dict[str, dict] = {
    "aa": {"num_heads": 2, "min_key_dim": 4},
    "gc": {"reduction": 4},
    "gsop": {"dim": 8},
    "halo": {"block_size": 2, "halo_size": 1},
    "issa": {"down_factor": (2, 2)},
    "sk": {"groups": 8},
}


def plugin_config(name: str) -> dict:
    """The plugin's config file as a dict, with the tiny-map knobs on top."""
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    return {**config, **TINY.get(name, {})}


def build(name: str, channels: int = 16, feat_size=SIZE, **kwargs) -> torch.nn.Module:
    kwargs = {**TINY.get(name, {}), **kwargs}
    if "feat_size" in inspect.signature(get_attention(name)).parameters:
        kwargs["feat_size"] = feat_size
    torch.manual_seed(0)
    return create_attention(name, channels, **kwargs)


def wake(plugin: torch.nn.Module) -> torch.nn.Module:
    """Give the parameters that start at zero (a residual scale, GC's last conv, non-local's
    output norm) non-zero values, so that the paths behind them show in the output."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in plugin.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return plugin


def open_residual(plugin: torch.nn.Module) -> torch.nn.Module:
    """Set a context plugin's zero-init residual scale to one, so its attention path shows."""
    scale = getattr(plugin, "gamma", None)
    if scale is None:
        scale = plugin.out_norm.weight
    with torch.no_grad():
        scale.fill_(1.0)
    return plugin


@pytest.mark.parametrize("name", PLUGINS)
def test_kind_and_output_shape(name):
    plugin = build(name)
    assert plugin.kind in KINDS
    x = torch.randn(2, 16, *SIZE)
    if plugin.kind != "conv":
        assert plugin(x).shape == x.shape
        return
    assert build(name, out_channels=24)(x).shape == (2, 24, *SIZE)
    assert build(name, out_channels=32, stride=2)(x).shape == (2, 32, 4, 3)


@pytest.mark.parametrize("name", PLUGINS)
def test_gradients_reach_every_parameter(name):
    plugin = build(name)
    wake(plugin)
    x = torch.randn(2, 16, *SIZE, requires_grad=True)
    plugin(x).square().sum().backward()
    assert x.grad.abs().sum() > 0
    for param_name, p in plugin.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", PLUGINS)
def test_one_sample_does_not_depend_on_the_others(name):
    plugin = build(name).eval()
    wake(plugin)
    x = torch.randn(3, 16, *SIZE)
    others = torch.cat([x[:1], torch.randn(2, 16, *SIZE)])
    torch.testing.assert_close(plugin(x)[:1], plugin(others)[:1])


@pytest.mark.parametrize("name", PLUGINS)
def test_channels_last_input_gives_the_same_result(name):
    plugin = build(name).eval()
    wake(plugin)
    x = torch.randn(2, 16, *SIZE)
    torch.testing.assert_close(plugin(x.to(memory_format=torch.channels_last)), plugin(x))


@pytest.mark.parametrize("name", [n for n in PLUGINS if get_attention(n).kind == "context"])
def test_context_plugins_are_the_identity_at_init_and_not_once_opened(name):
    plugin = build(name).eval()
    x = torch.randn(2, 16, *SIZE)
    assert torch.equal(plugin(x), x)
    assert not torch.allclose(open_residual(plugin)(x), x, atol=1e-3)


@pytest.mark.parametrize("name", PLUGINS)
def test_fp16_autocast_keeps_large_inputs_finite(name):
    # Features of magnitude 1e3 give q.k logits far beyond fp16's 65504.
    plugin = build(name).eval()
    wake(plugin)
    x = 1e3 * torch.randn(2, 16, *SIZE)
    with torch.autocast("cpu", dtype=torch.float16):
        out = plugin(x)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", PLUGINS)
def test_runs_under_torch_compile_without_graph_breaks(name):
    # aot_eager traces forward and backward exactly as inductor would, without compiling
    # kernels (30 s a plugin on two CPU cores); the GPU check runs inductor itself.
    plugin = build(name)
    wake(plugin)
    x = torch.randn(2, 16, *SIZE)
    torch._dynamo.reset()
    compiled = torch.compile(plugin, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, plugin(x))
    out.sum().backward()


# One small member of every backbone family, so that each plugin runs where each family puts it.
BACKBONES: dict[str, dict] = {
    "resnet18": {"channels": (16, 16, 32, 32), "zero_init_last": False},
    "resnet50": {"channels": (16, 16, 32, 32), "zero_init_last": False},
    "mobilenetv2_100": {},
    "mobilenext_100": {},
}


def small_halonet(attn: dict, **kwargs) -> torch.nn.Module:
    return HaloNet(
        layers=(1, 1, 2, 1), channels=(16, 16, 32, 32), block_size=2, halo_size=1,
        num_heads=(2, 2, 2, 2), attn=attention_factory(attn), zero_init_last=False, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("arch", [*BACKBONES, "halonet"])
@pytest.mark.parametrize("name", PLUGINS)
def test_inside_every_backbone_forward_and_backward(name, arch):
    if arch == "halonet":
        model = small_halonet(plugin_config(name), num_classes=5, img_size=64)
    else:
        model = visionattn.create_model(
            arch, attn=plugin_config(name), num_classes=5, img_size=64, **BACKBONES[arch]
        )
    plugins = [m for m in model.modules() if getattr(m, "kind", None) is not None]
    plugins = [m for m in plugins if not isinstance(m, HaloAttention) or name == "halo"]
    assert plugins, f"{name} was placed nowhere in {arch}"
    for plugin in plugins:
        wake(plugin)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    for plugin in plugins:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in plugin.parameters())


@pytest.mark.parametrize("name", PLUGINS)
def test_config_file_builds_the_plugin_it_names(name):
    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    assert config["name"] == name
    header = (CONFIGS / f"{name}.yaml").read_text().splitlines()[0]
    module = get_attention(name).__module__.rsplit(".", 1)[-1]
    assert header.startswith("# ") and header.endswith(f"visionattn/attention/{module}.py")
    assert {"stages", "blocks"} <= set(config)
    params = inspect.signature(get_attention(name)).parameters
    knobs = set(config) - {"name", "stages", "blocks"}
    assert knobs <= set(params), f"{name}.yaml sets knobs the plugin lacks: {knobs - set(params)}"
    assert not knobs & {"feat_size", "out_channels", "stride"}
    for knob in knobs:  # the config carries the paper's defaults, the same as the code's
        default = params[knob].default
        assert config[knob] == (list(default) if isinstance(default, tuple) else default), knob
