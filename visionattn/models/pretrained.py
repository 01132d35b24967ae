"""Starting a model from weights: the published ImageNet ones, or a file in torchvision's or
timm's layout, or a visionattn checkpoint.

Files are read with ``torch.load(weights_only=True)`` (or safetensors), so a file can hold
tensors and plain data but never code to run. Keys are matched strictly, with three expected
differences that are skipped and logged: plugins the file has no weights for start from their
own init (a context plugin is then the identity, so the model computes what the file's did);
keys of a conv the plugin replaced are dropped; a classifier of another width (another number of
classes) or one ``features_only`` left out is not loaded. Anything else that does not match fails
with one error that lists it.
"""

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from visionattn.attention import is_plugin
from visionattn.unpickling import refusal_reason

log = logging.getLogger(__name__)

# Our name -> torchvision's weights of the same architecture (torchvision.models.get_weight).
PUBLISHED = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V2",
    "resnet152": "ResNet152_Weights.IMAGENET1K_V2",
    "mobilenetv2_100": "MobileNet_V2_Weights.IMAGENET1K_V2",
}
# Checkpoints that wrap the state dict: Lightning's, and timm's / DeiT's training checkpoints.
_WRAPPERS = ("state_dict", "model", "module")
# Prefixes every key may carry: our LightningModule's attribute, DDP's and torch.compile's.
_PREFIXES = ("model.", "module.", "_orig_mod.")
_LISTED = 20  # keys listed per kind of mismatch; the rest are counted


class PretrainedError(ValueError):
    """Weights that cannot be read or do not fit the model; the message says what and where."""


def load_pretrained(model: nn.Module, source: str | Path | bool, name: str) -> None:
    """Load ``source`` (a file, or True for the published weights of ``name``) into ``model``."""
    if source is True:
        state = _published(name)
        origin = f"the published weights of {name}"
    else:
        state = read_state_dict(source)
        origin = str(source)
    state = _to_our_layout(state)
    load, skipped = _match(model, state, origin)
    model.load_state_dict(load, strict=False)
    if skipped:
        log.info("%s: not loaded (expected): %s", origin, _listing(skipped))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from a checkpoint and stripped of prefixes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedError(f"pretrained weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(path)
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedError(f"cannot read pretrained weights {path}: {_reason(e)}") from e
    for key in _WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    # A train.py checkpoint of a run with task.ema also holds the average: start from the trained
    # weights, as from a run without one.
    state = {
        k: v
        for k, v in data.items()
        if isinstance(v, torch.Tensor) and not k.startswith("model_ema.")
    }
    if not state:
        raise PretrainedError(f"{path} holds no tensors: expected a state dict")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _reason(error: Exception) -> str:
    refused = refusal_reason(error)
    if refused:
        return f"{refused}: save the model's state_dict() instead"
    if isinstance(error, RuntimeError | OSError) and str(error).strip():
        return str(error).strip().splitlines()[0]
    return "not a file that torch.save or safetensors wrote (truncated, or another format?)"


def _published(name: str) -> dict[str, torch.Tensor]:
    if name not in PUBLISHED:
        raise PretrainedError(
            f"no published weights for {name}; they exist for {', '.join(PUBLISHED)}. "
            f"Pass a file instead: model.pretrained=PATH"
        )
    from torchvision.models import get_weight

    url = get_weight(PUBLISHED[name]).url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
    except Exception as e:  # offline, a proxy, a partial file: all end the same way
        raise PretrainedError(
            f"cannot download the published weights of {name} from {url} ({e}). "
            f"Without a network, download that file elsewhere and put it at {cached}, "
            f"or pass its path: model.pretrained=PATH"
        ) from e


def _to_our_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's layouts, where the architecture is ours: its ResNets already use torchvision's keys
    (its SE-ResNets call the gate ``se``, ours ``attn``); its MobileNetV2 uses EfficientNet's."""
    if "conv_stem.weight" in state:
        return _from_timm_mobilenetv2(state)
    return {re.sub(r"\.se\.(fc[12])\.", r".attn.\1.", k): v for k, v in state.items()}


def _from_timm_mobilenetv2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ``blocks.<stage>.<block>`` to torchvision's ``features.<n>``, block by block."""
    fixed = {
        "conv_stem": "features.0.0",
        "bn1": "features.0.1",
        "conv_head": "features.18.0",
        "bn2": "features.18.1",
        "classifier": "classifier.1",
    }
    # The first block has no expansion: depthwise, then the projection (torchvision's 0, 1, 2).
    first = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
    inverted = {
        "conv_pw": "conv.0.0",
        "bn1": "conv.0.1",
        "conv_dw": "conv.1.0",
        "bn2": "conv.1.1",
        "conv_pwl": "conv.2",
        "bn3": "conv.3",
    }
    blocks = sorted({tuple(map(int, k.split(".")[1:3])) for k in state if k.startswith("blocks.")})
    index = {block: n + 1 for n, block in enumerate(blocks)}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            block = (int(parts[1]), int(parts[2]))
            layers = first if index[block] == 1 else inverted
            layer = layers.get(parts[3], parts[3])
            out[".".join(["features", str(index[block]), layer, *parts[4:]])] = value
        else:
            out[".".join([fixed.get(parts[0], parts[0]), *parts[1:]])] = value
    return out


def _under(key: str, modules: Iterable[str]) -> bool:
    return any(key.startswith(f"{m}.") for m in modules if m)


def _match(
    model: nn.Module, state: dict[str, torch.Tensor], origin: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    own = model.state_dict()
    plugins = [name for name, m in model.named_modules() if is_plugin(m)]
    classifier = getattr(model, "classifier_name", "")
    left_out = model.head_modules if getattr(model, "features_only", False) else ()
    fresh = list(plugins)  # modules that keep their own init where the file has nothing
    load, skipped, unexpected, shapes = {}, [], [], []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            load[key] = value
        elif key in own and _under(key, [classifier]):
            skipped.append(f"{key} (a classifier of shape {tuple(value.shape)})")
            fresh.append(classifier)
        elif key in own:
            shapes.append(f"{key}: {tuple(value.shape)} in the file, {tuple(own[key].shape)} here")
        elif _under(key, plugins):
            skipped.append(f"{key} (replaced by the plugin)")
        elif _under(key, left_out):
            skipped.append(f"{key} (head left out by features_only)")
        else:
            unexpected.append(key)
    missing = [k for k in own if k not in load and not _under(k, fresh)]
    if missing or unexpected or shapes:
        problems = [
            f"{what} ({len(keys)}): {_listing(keys)}"
            for what, keys in (
                ("missing from the file", missing),
                ("in the file but not in the model", unexpected),
                ("of another shape", shapes),
            )
            if keys
        ]
        raise PretrainedError(
            f"the weights in {origin} do not fit {type(model).__name__}: "
            + "; ".join(problems)
            + ". Is it the same architecture and width?"
        )
    return load, skipped


def _listing(keys: list[str]) -> str:
    more = f", and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more
