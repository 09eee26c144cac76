"""Deprecated aliases warn once per call, name the replacement and behave like it."""

from __future__ import annotations

import pytest

from weightspace._deprecation import deprecated, renamed_kwargs, warn_deprecated


def _mean(xs: list[float]) -> float:
    """Mean of ``xs``."""
    return sum(xs) / len(xs)


def test_deprecated_alias_warns_and_delegates() -> None:
    average = deprecated(since="0.1", alternative="mean", name="merge.average")(_mean)
    with pytest.warns(FutureWarning, match=r"`merge.average` is deprecated .* use `mean`") as rec:
        assert average([1.0, 2.0, 6.0]) == 3.0
    assert len(rec) == 1
    assert rec[0].filename == __file__
    assert average.__name__ == "average"
    assert average.__doc__ is not None and average.__doc__.startswith(".. deprecated:: 0.1")
    assert "Mean of ``xs``." in average.__doc__


def test_renamed_kwargs_moves_and_warns() -> None:
    with pytest.warns(FutureWarning, match=r"`f\(lam=...\)` .* use `f\(scale=...\)`"):
        out = renamed_kwargs({"lam": 0.5, "x": 1}, {"lam": "scale"}, func="f", since="0.1")
    assert out == {"scale": 0.5, "x": 1}


def test_renamed_kwargs_without_old_names_is_silent_and_copies() -> None:
    kwargs = {"scale": 0.5}
    out = renamed_kwargs(kwargs, {"lam": "scale"}, func="f", since="0.1")
    assert out == kwargs and out is not kwargs


def test_renamed_kwargs_refuses_both_spellings() -> None:
    with pytest.raises(TypeError, match=r"f\(\) got both `lam` \(deprecated\) and `scale`"):
        renamed_kwargs({"lam": 0.5, "scale": 1.0}, {"lam": "scale"}, func="f", since="0.1")


def test_warn_deprecated_names_removal_release() -> None:
    with pytest.warns(FutureWarning, match=r"since weightspace 0.1 and will be removed in 0.2"):
        warn_deprecated("old", "new", since="0.1")
