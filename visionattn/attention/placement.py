"""Where a plugin goes in a backbone: which stages, and which blocks of each stage.

Stages count from 1 (ResNet's ``layer1`` .. ``layer4``; the papers' res3 and res4 are stages 2
and 3). ``blocks`` is ``"all"``, ``"last"``, a list of block indices (negative counts from the
end), or an integer k: every k-th block counting back from the last, so ``2`` on ResNet-50's
stages 2 and 3 gives the five blocks of the Non-local paper.
"""

from collections.abc import Sequence
from dataclasses import dataclass

Stages = str | tuple[int, ...]
Blocks = str | int | tuple[int, ...]

# Gates are cheap and go everywhere; context blocks go where the Non-local paper put them; conv
# plugins replace every spatial conv, as in SASA and HaloNet.
_DEFAULTS = {
    "gate": ("all", "all"),
    "context": ((2, 3), 2),
    "conv": ("all", "all"),
}


@dataclass(frozen=True)
class Placement:
    stages: Stages = "all"
    blocks: Blocks = "all"

    def __post_init__(self) -> None:
        stages, blocks = self.stages, self.blocks
        if isinstance(stages, Sequence) and not isinstance(stages, str):
            object.__setattr__(self, "stages", tuple(int(s) for s in stages))
        elif stages != "all":
            raise ValueError(
                f"attn.stages must be 'all' or a list of stage numbers, got {stages!r}"
            )
        if isinstance(blocks, Sequence) and not isinstance(blocks, str):
            object.__setattr__(self, "blocks", tuple(int(b) for b in blocks))
        elif isinstance(blocks, int) and not isinstance(blocks, bool):
            if blocks < 1:
                raise ValueError(f"attn.blocks={blocks}: every k-th block needs k >= 1")
        elif blocks not in ("all", "last"):
            raise ValueError(
                "attn.blocks must be 'all', 'last', k (every k-th block from the last) or a list "
                f"of block indices, got {blocks!r}"
            )

    @classmethod
    def default(cls, kind: str) -> "Placement":
        """Where a plugin of ``kind`` goes when its config does not say."""
        return cls(*_DEFAULTS[kind])

    def check(self, num_stages: int) -> None:
        """Fail, naming the valid stages, when a stage number does not exist in the backbone."""
        if self.stages == "all":
            return
        bad = [s for s in self.stages if not 1 <= s <= num_stages]
        if bad:
            raise ValueError(
                f"attn.stages={list(self.stages)}: this backbone has stages 1..{num_stages}"
            )

    def selects(self, stage: int, index: int, depth: int) -> bool:
        """Whether block ``index`` (from 0) of a ``depth``-block stage ``stage`` gets a plugin."""
        if self.stages != "all" and stage not in self.stages:
            return False
        if self.blocks == "all":
            return True
        if self.blocks == "last":
            return index == depth - 1
        if isinstance(self.blocks, int):
            return (depth - 1 - index) % self.blocks == 0
        return index in self.blocks or index - depth in self.blocks
