"""The model and plugin settings the benchmark measures: those ``python train.py model=<m>
attn=<a>`` trains, read from the same configs (``configs/``, installed as the package
``visionattn.configs``), so a figure in the tables is the cost of the run a user starts."""

from omegaconf import OmegaConf

from visionattn.attention import list_attentions
from visionattn.models import list_models

CONFIG_MODULE = "visionattn.configs"
PLACEMENT_KEYS = ("name", "stages", "blocks")


def check_names(models: list[str], attns: list[str]) -> None:
    """Fail before anything is measured on a name no config builds, listing the valid ones."""
    for name in models:
        if name not in list_models():
            raise SystemExit(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    for name in attns:
        if name != "none" and name not in list_attentions():
            raise SystemExit(
                f"unknown attention plugin {name!r}; valid: none, {', '.join(list_attentions())}"
            )


def _compose(overrides: list[str]) -> tuple[dict, dict]:
    from hydra import compose, initialize_config_module

    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    # The two nodes alone: the rest interpolates hydra's runtime settings, unset outside a run.
    return (OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.attn))


def model_config(model: str, attn: str, image_size: int) -> tuple[dict, dict | None]:
    """``(model, attn)`` as the training task receives them, for ``image_size`` pixel inputs."""
    model_cfg, attn_cfg = _compose(
        [f"model={model}", f"attn={attn}", f"data.image_size={image_size}"]
    )
    return model_cfg, None if attn_cfg.get("name") in (None, "none") else attn_cfg


def plugin_settings(attn: str) -> dict:
    """The plugin's knobs in ``configs/attn/<attn>.yaml``, without its placement in a backbone."""
    _, attn_cfg = model_config("resnet18", attn, 224)
    return {k: v for k, v in (attn_cfg or {}).items() if k not in PLACEMENT_KEYS}
