"""Config mistakes in one line: ``error: <what> <the fix>``, no traceback, exit status 1.

Hydra reports an unknown key, option or unparsable override in five to fifteen lines, followed by
its advice on ``HYDRA_FULL_ERROR``. The entry points run under :func:`run_main`, which words each
of those errors as one line; ``HYDRA_FULL_ERROR=1`` still gives Hydra's full trace. Anything
that is not a config mistake (a bug) keeps its traceback.
"""

import difflib
import os
import re
import sys
from collections.abc import Callable, Iterable

from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def run_main(main: Callable[[], object], config_name: str) -> None:
    """Call a ``@hydra.main`` function, turning config mistakes into one line on stderr."""
    full_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Hydra re-raises under HYDRA_FULL_ERROR instead of printing its own report of the error.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as e:
        if full_trace:
            raise
        sys.exit(f"error: {describe(e, config_name, sys.argv[1:])}")


def describe(error: Exception, config_name: str, overrides: Iterable[str] = ()) -> str:
    """One line for a Hydra or OmegaConf config error."""
    text = _message(error)
    if isinstance(error, OverrideParseException):
        reason = _lines(text)[0]
        culprit = next((o for o in overrides if _unparsable(o)), None)
        what = f"the override {culprit!r}" if culprit else "an override"
        return f"cannot parse {what} ({reason}): the grammar is at {GRAMMAR}"
    option = re.search(r"Could not (?:find|load) '([^']+)/([^']+)'", text)
    if option:
        group, name = option.groups()
        _, found, after = text.partition("Available options")
        listed = re.findall(r"^\s+(\S+)\s*$", after, re.M) if found else []
        options = f": {group} takes {', '.join(listed)}" if listed else ""
        return f"{group}={name} is not an option{options}"
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if unknown:
        key = unknown.group(1)
        override = next((o for o in overrides if o.split("=", 1)[0].lstrip("~") == key), None)
        hint = _closest_key(key, config_name, [o for o in overrides if o != override])
        value = override.split("=", 1)[1] if override and "=" in override else "VALUE"
        fix = f"did you mean {hint}?" if hint else f"to add a key, write +{key}={value}"
        return f"{key} is not a key of the config: {fix}"
    missing = re.search(r"Missing mandatory value: ([\w.]+)", text)
    if missing:
        key = missing.group(1)
        return f"{key} is not set (???): pass {key}=VALUE"
    return "; ".join(line for line in _lines(text) if not line.startswith(("full_key", "object_")))


def _unparsable(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return True
    return False


def _message(error: BaseException) -> str:
    # Hydra's composition errors carry OmegaConf's reason as their cause.
    parts = [str(error)]
    if error.__cause__ is not None:
        parts.append(str(error.__cause__))
    return "\n".join(parts)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _closest_key(key: str, config_name: str, overrides: list[str]) -> str | None:
    """The config's key that ``key`` most likely meant: the same last name elsewhere, or the
    nearest spelling among the keys under the same parent."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    try:
        with initialize_config_module("visionattn.configs", version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
    except Exception:  # the rest of the command line is broken too: no hint, only the error
        return None
    keys = _dotted(OmegaConf.to_container(cfg, resolve=False))
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if len(same_leaf) == 1:
        return same_leaf[0]
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return near[0] if near else None


def _dotted(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix] if prefix else []
    keys = [prefix] if prefix else []
    for name, value in node.items():
        keys += _dotted(value, f"{prefix}.{name}" if prefix else str(name))
    return keys
