"""What ``torch.load(..., weights_only=True)`` refused, in our words: torch's own message advises
``weights_only=False``, which would run whatever the file names, so it is never repeated."""

import re

_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)


def refused_global(error: BaseException) -> str | None:
    """The dotted name of the Python object a file needed and the safe loader refused, if any."""
    found = _GLOBAL.search(str(error))
    return found.group(1) if found else None


def refusal_reason(error: BaseException) -> str | None:
    """Why the safe loader refused a file that names a Python object, without torch's advice;
    None for other errors."""
    name = refused_global(error)
    if name:
        return (
            f"it holds a {name} object, and files are read with weights_only=True, which builds "
            "tensors and plain data only (loading that object could run code)"
        )
    return None
