import pytest

from visionattn.attention import attention_factory
from visionattn.attention.placement import Placement


def chosen(placement: Placement, stage: int, depth: int) -> list[int]:
    return [i for i in range(depth) if placement.selects(stage, i, depth)]


def test_block_choices():
    assert chosen(Placement("all", "all"), 1, 3) == [0, 1, 2]
    assert chosen(Placement("all", "last"), 1, 3) == [2]
    assert chosen(Placement("all", 2), 1, 6) == [1, 3, 5]  # every other, ending on the last
    assert chosen(Placement("all", 3), 1, 4) == [0, 3]
    assert chosen(Placement("all", [0, -1]), 1, 4) == [0, 3]
    assert chosen(Placement([2, 3], "all"), 1, 3) == []
    assert chosen(Placement([2, 3], "all"), 3, 2) == [0, 1]


def test_each_kind_has_a_default_and_a_config_overrides_it():
    assert attention_factory("se").placement == Placement("all", "all")
    assert attention_factory({"name": "se", "stages": [3, 4], "blocks": "last"}).placement == (
        Placement((3, 4), "last")
    )
    assert Placement.default("context") == Placement((2, 3), 2)


@pytest.mark.parametrize(
    ("stages", "blocks", "message"),
    [
        ("some", "all", "attn.stages must be 'all' or a list of stage numbers, got 'some'"),
        ("all", "first", "attn.blocks must be 'all', 'last', k"),
        ("all", 0, "every k-th block needs k >= 1"),
    ],
)
def test_bad_placements_say_what_is_allowed(stages, blocks, message):
    with pytest.raises(ValueError, match=message):
        Placement(stages, blocks)
