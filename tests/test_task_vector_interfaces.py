"""TaskVector's edges: keyword-only models, name mappings without `select`, the LoRA hooks.

Also the identities that the package's split relies on (a renamed subset keeps values bit
for bit; the union policy of `add` is the sum of the two `union`s).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace
from weightspace import (
    ShapeMismatchError,
    TaskVector,
    WeightspaceError,
    WeightspaceTypeError,
    WeightspaceValueError,
    select,
)
from weightspace._lora import lora_to_task_vector, low_rank, to_lora
from weightspace._task_vector import SupportsNameMapping
from weightspace._task_vector._interfaces import (
    LoraConversions,
    lora_conversions,
    register_lora_conversions,
)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


# ------------------------------------------------------------------------ from_models keywords


def test_from_models_takes_keywords_and_orders_them_like_the_reference() -> None:
    base = {"w": torch.tensor([1.0, 2.0])}
    ft = {"w": torch.tensor([4.0, 0.0])}
    tv = TaskVector.from_models(base=base, finetuned=ft)
    assert torch.equal(tv["w"], torch.tensor([3.0, -2.0]))  # finetuned - base
    assert torch.equal(TaskVector.from_models(finetuned=ft, base=base)["w"], tv["w"])


@pytest.mark.parametrize("args", [1, 2])
def test_from_models_refuses_positional_models(args: int) -> None:
    models = [{"w": torch.zeros(1)}, {"w": torch.ones(1)}][:args]
    expected = (
        f"`TaskVector.from_models` takes its models by keyword only, got {args} positional "
        "argument(s); write `TaskVector.from_models(base=..., finetuned=...)`"
    )
    with pytest.raises(WeightspaceTypeError, match=re.escape(expected)) as info:
        TaskVector.from_models(*models)  # type: ignore[misc]
    # catchable as the standard exception and as the library's
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, WeightspaceError)


def test_from_models_signature_is_keyword_only() -> None:
    import inspect

    params = inspect.signature(TaskVector.from_models).parameters
    assert [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY][:2] == [
        "base",
        "finetuned",
    ]
    assert TaskVector.from_models.__doc__ is not None
    assert "by keyword" in TaskVector.from_models.__doc__


def test_weightspace_type_error_is_public() -> None:
    assert weightspace.WeightspaceTypeError is WeightspaceTypeError
    assert issubclass(WeightspaceTypeError, TypeError)
    assert not issubclass(WeightspaceTypeError, ValueError)


# ------------------------------------------------------------------------ apply_to_(model=)


def test_apply_to_in_place_takes_model_and_module_is_a_deprecated_alias() -> None:
    base, ft = mlp(0), mlp(1)
    tv = TaskVector.from_models(base=base, finetuned=ft)
    new_name = tv.apply_to_(model=mlp(0), scale=0.5)
    with pytest.warns(FutureWarning, match=r"`TaskVector\.apply_to_\(module=\.\.\.\)` is dep"):
        old_name = tv.apply_to_(module=mlp(0), scale=0.5)  # type: ignore[call-arg]
    for (name, a), (_, b) in zip(
        new_name.state_dict().items(), old_name.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    expected = (base[0].weight + ft[0].weight) / 2
    assert torch.allclose(new_name[0].weight, expected)


def test_apply_to_in_place_rejects_both_spellings_and_non_modules() -> None:
    tv = TaskVector({"weight": torch.ones(2, 3)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(TypeError, match="got both `module` .* and `model`"):
            tv.apply_to_(model=nn.Linear(3, 2), module=nn.Linear(3, 2))  # type: ignore[call-arg]
    with pytest.raises(WeightspaceValueError, match=r"^`model` must be an nn\.Module, got dict"):
        tv.apply_to_({"weight": torch.zeros(2, 3)})  # type: ignore[type-var]
    with pytest.raises(ShapeMismatchError, match=r"`model\['weight'\]` has shape \(2, 4\)"):
        tv.apply_to_(nn.Linear(4, 2))


# ------------------------------------------------------------------------ name mappings


@dataclass(frozen=True)
class Renames:
    """A name mapping that is not a `select.Selection`."""

    names_a: tuple[str, ...]
    names_b: tuple[str, ...]


def test_any_name_mapping_works_for_restrict_and_transfer() -> None:
    tv = TaskVector({"a.weight": torch.ones(2), "b.weight": torch.full((3,), 2.0)})
    renames = Renames(("b.weight",), ("other.b.weight",))
    assert isinstance(renames, SupportsNameMapping)
    assert isinstance(select.Selection(["a.weight"]), SupportsNameMapping)
    assert list(tv.restrict(renames)) == ["b.weight"]
    moved = tv.transfer(renames)
    via_selection = tv.transfer(select.Selection({"b.weight": "other.b.weight"}))
    assert list(moved) == ["other.b.weight"]
    assert moved.equal(via_selection)


def test_transfer_rejects_what_is_not_a_name_mapping() -> None:
    tv = TaskVector({"a": torch.ones(1)})
    with pytest.raises(WeightspaceValueError, match=r"^`selection` must be a weightspace\.select"):
        tv.transfer(["a"])  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"pairs 1 names of A with 2 names of B"):
        tv.transfer(Renames(("a",), ("x", "y")))
    with pytest.raises(ShapeMismatchError, match=r"1 names of `selection.names_a` are not in"):
        tv.transfer(Renames(("zz",), ("x",)))


def test_selection_methods_dispatch_to_the_task_vector() -> None:
    tv = TaskVector({"a": torch.ones(1), "b": torch.zeros(2)})
    sel = select.Selection({"b": "c"})
    moved = sel.transfer(tv)
    assert isinstance(moved, TaskVector) and list(moved) == ["c"]
    kept = sel.restrict(tv)
    assert isinstance(kept, TaskVector) and list(kept) == ["b"]


# ------------------------------------------------------------------------ LoRA hooks


def test_lora_methods_delegate_to_the_registered_functions() -> None:
    conversions = lora_conversions()
    assert conversions.from_lora is lora_to_task_vector
    assert conversions.low_rank is low_rank
    assert conversions.to_lora is to_lora
    tv = TaskVector({"fc.weight": torch.outer(torch.arange(3.0), torch.ones(2))})
    assert tv.low_rank(1).relative_error == low_rank(tv, 1).relative_error
    assert tv.to_lora(1).config == to_lora(tv, 1).config


def test_unregistered_lora_conversions_say_what_to_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from weightspace._task_vector import _interfaces

    monkeypatch.setattr(_interfaces, "_registered", [])
    with pytest.raises(WeightspaceError, match="`import weightspace`"):
        TaskVector({"fc.weight": torch.ones(2, 2)}).low_rank(1)
    calls: list[int] = []

    def fake_low_rank(tv: TaskVector, rank: int) -> object:
        calls.append(rank)
        return "factored"

    register_lora_conversions(LoraConversions(lora_to_task_vector, fake_low_rank, to_lora))  # type: ignore[arg-type]
    assert TaskVector({"w": torch.ones(1)}).low_rank(3) == "factored"
    assert calls == [3]


def test_lora_conversions_load_on_first_use_without_the_top_level_package() -> None:
    """``weightspace`` loads TaskVector lazily; its LoRA methods must work however it is reached."""
    code = (
        "import sys, torch\n"
        "from weightspace._task_vector import TaskVector\n"
        "assert 'weightspace._lora' not in sys.modules\n"
        "sd = {'m.lora_A.weight': torch.ones(1, 2), 'm.lora_B.weight': torch.full((3, 1), 2.0)}\n"
        "tv = TaskVector.from_lora(sd, config={'r': 1, 'lora_alpha': 2})\n"
        "print(sorted(tv.keys()), float(tv['m.weight'].sum()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "['m.weight'] 24.0"


# ------------------------------------------------------------------------ identities

VALUES = st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(VALUES, VALUES)
def test_renamed_subset_keeps_values_bit_for_bit(x: list[float], y: list[float]) -> None:
    tv = TaskVector({"a": torch.tensor(x), "b": torch.tensor(y)})
    sel = select.Selection({"a": "p", "b": "q"})
    there = tv.transfer(sel)
    back = there.transfer(sel.inverse())
    assert back.equal(tv)
    assert torch.equal(there["q"], tv["b"])
    assert tv.restrict(list(tv)).equal(tv)


@settings(max_examples=40, deadline=None)
@given(VALUES, VALUES)
def test_union_add_is_the_sum_of_the_unions(x: list[float], y: list[float]) -> None:
    a = TaskVector({"x": torch.tensor(x)})
    b = TaskVector({"x": torch.tensor(x[::-1]), "y": torch.tensor(y)})
    assert a.add(b, keys="union").equal(a.union(b) + b.union(a))
    assert a.sub(b, keys="union").equal(a.union(b) - b.union(a))


@settings(max_examples=40, deadline=None)
@given(VALUES)
def test_scale_one_keeps_the_exact_sources(x: list[float]) -> None:
    base = {"w": torch.tensor(x)}
    ft = {"w": torch.tensor(x) * 3 + 0.1}
    tv = TaskVector.from_models(base=base, finetuned=ft)
    for same in (tv * 1, tv.restrict(["w"]), tv.intersection(["w"]), tv.with_metadata({})):
        assert torch.equal(same.apply_to(base)["w"], ft["w"])
