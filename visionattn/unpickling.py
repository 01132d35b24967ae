"""What ``torch.load(..., weights_only=True)`` refused, in our words: torch's own message advises
``weights_only=False``, which would run whatever the file names, so it is never repeated."""

import re

_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)


def refusal_reason(error: BaseException) -> str | None:
    """Why the safe loader refused a file that names a Python object (the object's dotted name
    in torch's message), without torch's advice; None for other errors."""
    found = _GLOBAL.search(str(error))
    if found is None:
        return None
    return (
        f"it holds a {found.group(1)} object, and files are read with weights_only=True, which "
        "builds tensors and plain data only (loading that object could run code)"
    )
