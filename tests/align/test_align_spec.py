"""Hand-written permutation specs: validation, description and checks against state dicts."""

from __future__ import annotations

import pytest
import torch

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace.align import Axis, PermutationSpec


def _a(group: str, repeat: int = 1) -> Axis:
    return Axis(group, repeat)


def test_hand_written_spec_validation() -> None:
    spec = PermutationSpec(
        {"a.weight": ["h", None], "a.bias": ("h",), "b.weight": (None, Axis("h"))},
        producers={"h": "a"},
    )
    assert spec.producers["h"] == (("a", -1),)
    assert spec.axes["a.weight"] == (_a("h"), None)
    assert spec.describe() == "h (? units): a.weight[0], a.bias[0], b.weight[1]"
    with pytest.raises(WeightspaceValueError, match=r"`axes\['w'\]` must be a sequence"):
        PermutationSpec({"w": "h"})
    with pytest.raises(WeightspaceValueError, match=r"`axes\['w'\]\[0\]` must be a group name"):
        PermutationSpec({"w": (3,)})
    with pytest.raises(WeightspaceValueError, match="`repeat` must be a positive integer"):
        Axis("h", 0)
    with pytest.raises(WeightspaceValueError, match="`sizes` names the group 'g'"):
        PermutationSpec({"w": ("h",)}, sizes={"g": 2})
    with pytest.raises(WeightspaceValueError, match="`producers` names the group 'g'"):
        PermutationSpec({"w": ("h",)}, producers={"g": "m"})


def test_check_names_the_tensor() -> None:
    spec = PermutationSpec({"a": ("h", None), "b": (None, Axis("h", 2))})
    assert spec.check({"a": torch.zeros(3, 1), "b": torch.zeros(1, 6)}) == {"h": 3}
    with pytest.raises(ShapeMismatchError, match=r"missing from `state_dict`: \['b'\]"):
        spec.check({"a": torch.zeros(3, 1)})
    with pytest.raises(ShapeMismatchError, match=r"`state_dict\['a'\]` has shape \[3\]"):
        spec.check({"a": torch.zeros(3), "b": torch.zeros(1, 6)})
    with pytest.raises(ShapeMismatchError, match=r"3 units on `state_dict\['a'\]` but 4 on"):
        spec.check({"a": torch.zeros(3, 1), "b": torch.zeros(1, 8)})
    with pytest.raises(ShapeMismatchError, match="not a multiple of repeat=2"):
        spec.check({"a": torch.zeros(3, 1), "b": torch.zeros(1, 7)})
    sized = PermutationSpec({"a": ("h", None)}, sizes={"h": 4})
    with pytest.raises(ShapeMismatchError, match="but the spec says 4"):
        sized.check({"a": torch.zeros(3, 1)})
