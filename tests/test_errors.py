from __future__ import annotations

import weightspace as ws


def test_hierarchy() -> None:
    assert issubclass(ws.WeightspaceValueError, ValueError)
    assert issubclass(ws.ShapeMismatchError, ws.WeightspaceValueError)
    assert issubclass(ws.MissingSourceError, ImportError)
    for cls in (ws.WeightspaceValueError, ws.MissingSourceError, ws.CacheError):
        assert issubclass(cls, ws.WeightspaceError)
