"""Array inputs of the spectral functions: one ``ArrayLike`` type, read the same from any form."""

from __future__ import annotations

import collections.abc
import inspect
import os
import typing
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from weightspace import WeightspaceValueError, io, select, spectral

_ALIASES = {"StateDictLike": io.StateDictLike, "Targets": select.Targets, "os": os}


def _callables() -> list[tuple[str, Any]]:
    found = []
    for name in spectral.__all__:
        obj = getattr(spectral, name)
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if inspect.isfunction(fn) and (not attr.startswith("_") or attr == "__init__"):
                    found.append((f"{name}.{attr}", fn))
    return found


@pytest.mark.parametrize(("qualname", "fn"), _callables(), ids=[q for q, _ in _callables()])
def test_no_public_parameter_is_typed_any(qualname: str, fn: Any) -> None:
    hints = typing.get_type_hints(fn, localns=_ALIASES)
    loose = [p for p, hint in hints.items() if p != "return" and hint is Any]
    assert not loose, f"{qualname}: {loose} typed Any"


def test_array_like_is_one_public_alias() -> None:
    from numpy.typing import NDArray

    # torch.Tensor is a forward reference (the mesh path never imports torch); type hints
    # resolve it to the class
    assert typing.get_args(spectral.ArrayLike)[1] == typing.ForwardRef("Tensor", module="torch")
    hints = typing.get_type_hints(spectral.linear_cka)
    assert set(typing.get_args(hints["x"])) == {
        NDArray[Any],
        torch.Tensor,
        collections.abc.Sequence[Any],
    }
    assert hints["x"] == hints["y"] == typing.get_type_hints(spectral.nearest_neighbors)["queries"]
    adjacency = typing.get_type_hints(spectral.graph_laplacian)["adjacency"]
    assert set(typing.get_args(adjacency)) >= {sp.sparray, sp.spmatrix, type(None)}


def test_numpy_tensor_and_nested_lists_give_the_same_results() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 4))
    forms = [lambda a: a, torch.from_numpy, lambda a: a.tolist(), lambda a: torch.tensor(a).float()]
    cka = [spectral.linear_cka(f(x), f(y)) for f in forms[:3]]
    assert cka[0] == cka[1] == cka[2]
    rot = [spectral.procrustes_rotation(f(x), f(x[:, ::-1].copy())) for f in forms[:3]]
    np.testing.assert_array_equal(rot[0], rot[1])
    np.testing.assert_array_equal(rot[0], rot[2])
    # float32 tensors are read as float64 copies of their values
    assert spectral.linear_cka(forms[3](x), forms[3](y)) == spectral.linear_cka(
        np.float32(x).astype(np.float64), np.float32(y).astype(np.float64)
    )


def test_sparse_and_dense_adjacency_build_the_same_laplacian() -> None:
    a = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    dense = spectral.graph_laplacian(adjacency=a)
    for matrix in (sp.csr_matrix(a), sp.csr_array(a), sp.coo_array(a)):
        lap = spectral.graph_laplacian(adjacency=matrix)
        np.testing.assert_array_equal(lap.stiffness.toarray(), dense.stiffness.toarray())
    # weighted edges are averaged with their reverse: list both directions
    pairs = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    edges = spectral.graph_laplacian(pairs, edge_weight=torch.tensor([1.0, 1.0, 2.0, 2.0]))
    np.testing.assert_array_equal(edges.stiffness.toarray(), dense.stiffness.toarray())


def test_unreadable_arrays_name_the_argument() -> None:
    with pytest.raises(WeightspaceValueError, match=r"^`x` must be a numeric array or tensor"):
        spectral.linear_cka([["a", "b"]], np.zeros((1, 2)))
    with pytest.raises(
        WeightspaceValueError, match=r"^`y` must have 2 dimensions, got shape \[3\]"
    ):
        spectral.linear_cka(np.zeros((3, 2)), np.zeros(3))
