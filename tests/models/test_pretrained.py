"""Weights from files in torchvision's and timm's layouts, checked by equal outputs."""

import urllib.error
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from visionattn import create_model
from visionattn.attention import get_attention, list_attentions
from visionattn.models.pretrained import PUBLISHED, PretrainedError

X = torch.randn(2, 3, 64, 64)


def saved(tmp_path: Path, state: dict, name: str = "weights.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def same_outputs(model: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor = X) -> None:
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))


@pytest.fixture(scope="module")
def resnet18():
    return torchvision.models.resnet18().eval()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "epoch": 3},
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
        # train.py with task.ema: the trained weights, not their average (zeros here), load.
        lambda s: {
            "state_dict": {
                **{f"model.{k}": v for k, v in s.items()},
                **{f"model_ema.module.{k}": torch.zeros_like(v) for k, v in s.items()},
            }
        },
    ],
    ids=["plain", "lightning", "ddp-in-a-training-checkpoint", "lightning-with-ema"],
)
def test_torchvision_state_dicts_load_and_compute_the_same(tmp_path, resnet18, wrap):
    path = saved(tmp_path, wrap(resnet18.state_dict()))
    same_outputs(create_model("resnet18", pretrained=path), resnet18)


def test_resnet50_from_torchvision_and_timm(tmp_path):
    for reference in (torchvision.models.resnet50(), timm.create_model("resnet50")):
        path = saved(tmp_path, reference.state_dict())
        same_outputs(create_model("resnet50", pretrained=path), reference)


def test_timm_se_resnet_loads_into_our_se_plugin(tmp_path):
    reference = timm.create_model("seresnet50")
    path = saved(tmp_path, reference.state_dict())
    same_outputs(create_model("resnet50", attn="se", pretrained=path), reference)


@pytest.mark.parametrize("width", ["050", "100"])
def test_mobilenetv2_from_torchvision_and_timm(tmp_path, width):
    torchvision_model = torchvision.models.mobilenet_v2(width_mult=int(width) / 100)
    timm_model = timm.create_model(f"mobilenetv2_{width}")
    for reference in (torchvision_model, timm_model):
        path = saved(tmp_path, reference.state_dict())
        same_outputs(create_model(f"mobilenetv2_{width}", pretrained=path), reference)


def test_a_context_plugin_in_mobilenetv2_keeps_the_pretrained_outputs(tmp_path):
    reference = torchvision.models.mobilenet_v2()
    path = saved(tmp_path, reference.state_dict())
    model = create_model("mobilenetv2_100", attn="nonlocal", img_size=64, pretrained=path)
    assert any(getattr(m, "kind", None) == "context" for m in model.modules())
    same_outputs(model, reference)


def test_safetensors_files_load(tmp_path, resnet18):
    path = tmp_path / "model.safetensors"
    save_file(resnet18.state_dict(), path)
    same_outputs(create_model("resnet18", pretrained=path), resnet18)


CONTEXT = [name for name in list_attentions() if get_attention(name).kind == "context"]


@pytest.mark.parametrize("attn", CONTEXT)
def test_a_context_plugin_leaves_the_pretrained_model_unchanged_at_init(tmp_path, resnet18, attn):
    path = saved(tmp_path, resnet18.state_dict())
    model = create_model("resnet18", attn=attn, img_size=64, pretrained=path)
    assert any(getattr(m, "kind", None) == "context" for m in model.modules())
    same_outputs(model, resnet18)


def test_another_number_of_classes_keeps_the_body_and_a_fresh_classifier(tmp_path, resnet18):
    path = saved(tmp_path, resnet18.state_dict())
    model = create_model("resnet18", num_classes=10, pretrained=path).eval()
    assert model.fc.out_features == 10
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(X), reference_features(resnet18))


def reference_features(model: torch.nn.Module) -> torch.Tensor:
    body = torch.nn.Sequential(*list(model.children())[:-2]).eval()
    with torch.no_grad():
        return body(X)


def test_features_only_loads_without_the_head(tmp_path, resnet18):
    path = saved(tmp_path, resnet18.state_dict())
    model = create_model("resnet18", features_only=True, pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X)[-1], reference_features(resnet18))


def test_a_conv_plugin_drops_only_the_conv_it_replaces(tmp_path, resnet18):
    path = saved(tmp_path, resnet18.state_dict())
    model = create_model("resnet18", attn="sasa", pretrained=path)
    assert torch.equal(model.layer1[0].conv1.weight, resnet18.layer1[0].conv1.weight)
    assert torch.equal(model.layer4[1].bn2.weight, resnet18.layer4[1].bn2.weight)
    assert getattr(model.layer1[0].conv2, "kind", None) == "conv"


@pytest.mark.parametrize("attn", [None, "se"])
def test_a_halonet_file_without_its_own_attention_weights_fails(tmp_path, attn):
    # HaloNet's halo layers are the architecture, not a plugin: a file must hold them.
    source = create_model("halonet_h0", num_classes=10)
    state = {k: v for k, v in source.state_dict().items() if ".conv2." not in k}
    assert len(state) < len(source.state_dict())
    path = saved(tmp_path, state)
    with pytest.raises(PretrainedError, match=r"missing from the file .*layer1\.0\.conv2\."):
        create_model("halonet_h0", attn=attn, num_classes=10, pretrained=path)
    # With them, the file loads, and a plugin placed beside them keeps its own init.
    model = create_model("halonet_h0", attn=attn, num_classes=10,
                         pretrained=saved(tmp_path, source.state_dict()))  # fmt: skip
    assert torch.equal(model.layer1[0].conv2.q.weight, source.layer1[0].conv2.q.weight)


def test_another_architecture_fails_with_one_error_listing_the_keys(tmp_path):
    path = saved(tmp_path, torchvision.models.resnet50().state_dict())
    with pytest.raises(PretrainedError) as error:
        create_model("resnet18", pretrained=path)
    message = str(error.value)
    assert "do not fit ResNet" in message
    assert "in the file but not in the model" in message and "layer1.0.conv3.weight" in message
    assert "of another shape" in message
    assert "layer1.0.conv1.weight: (64, 64, 1, 1) in the file, (64, 64, 3, 3) here" in message


def test_files_are_read_with_weights_only_and_run_no_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = saved(tmp_path, {"conv1.weight": torch.zeros(1), "extra": Payload()})
    with pytest.raises(PretrainedError, match="weights_only=True"):
        create_model("resnet18", pretrained=path)
    assert not marker.exists()


def test_a_pickled_function_is_named_and_the_unsafe_load_never_advised(tmp_path):
    path = saved(tmp_path, {"conv1.weight": torch.zeros(1), "hook": print})
    with pytest.raises(PretrainedError) as error:
        create_model("resnet18", pretrained=path)
    assert "it holds a print object" in str(error.value)
    assert "weights_only=False" not in str(error.value)


def test_unreadable_and_missing_files_say_so(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    with pytest.raises(PretrainedError, match=r"not a file that torch\.save or safetensors wrote"):
        create_model("resnet18", pretrained=junk)
    with pytest.raises(PretrainedError, match="pretrained weights not found"):
        create_model("resnet18", pretrained=tmp_path / "absent.pth")


def test_published_weights_come_from_the_hub_cache(tmp_path, monkeypatch, resnet18):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.get_weight(PUBLISHED["resnet18"]).url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18.state_dict(), cache / Path(url).name)
    same_outputs(create_model("resnet18", pretrained=True), resnet18)


def test_offline_the_download_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(PretrainedError, match=f"put it at {expected}"):
        create_model("resnet50", pretrained=True)
    with pytest.raises(PretrainedError, match="no published weights for halonet_h0"):
        create_model("halonet_h0", pretrained=True)
