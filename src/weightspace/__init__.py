"""weightspace: work in the weight space of neural networks.

The top-level namespace holds the core objects and the library's exceptions. Subpackages are
imported on first use (``weightspace.data``, ``weightspace.models``, ...), so that
``import weightspace`` needs only the core dependencies and stays fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from weightspace._errors import CacheError as CacheError
from weightspace._errors import MissingSourceError as MissingSourceError
from weightspace._errors import ShapeMismatchError as ShapeMismatchError
from weightspace._errors import WeightspaceError as WeightspaceError
from weightspace._errors import WeightspaceTypeError as WeightspaceTypeError
from weightspace._errors import WeightspaceValueError as WeightspaceValueError
from weightspace._version import __version__ as __version__

if TYPE_CHECKING:
    from weightspace import align as align
    from weightspace import arithmetic as arithmetic
    from weightspace import audio as audio
    from weightspace import data as data
    from weightspace import distill as distill
    from weightspace import games as games
    from weightspace import io as io
    from weightspace import merge as merge
    from weightspace import models as models
    from weightspace import report as report
    from weightspace import saliency as saliency
    from weightspace import select as select
    from weightspace import spectral as spectral
    from weightspace import text as text
    from weightspace import train as train
    from weightspace import unlearn as unlearn
    from weightspace._lora import LoraAdapter as LoraAdapter
    from weightspace._lora import LowRankTaskVector as LowRankTaskVector
    from weightspace._task_vector import LayerStats as LayerStats
    from weightspace._task_vector import TaskVector as TaskVector

__all__ = [
    "CacheError",
    "LayerStats",
    "LoraAdapter",
    "LowRankTaskVector",
    "MissingSourceError",
    "ShapeMismatchError",
    "TaskVector",
    "WeightspaceError",
    "WeightspaceTypeError",
    "WeightspaceValueError",
    "__version__",
    "align",
    "arithmetic",
    "audio",
    "data",
    "distill",
    "games",
    "io",
    "merge",
    "models",
    "report",
    "saliency",
    "select",
    "spectral",
    "text",
    "train",
    "unlearn",
]

# The lower-case public names are the subpackages, imported on first access.
_SUBMODULES = frozenset(name for name in __all__ if name.islower() and not name.startswith("_"))
# The core classes need torch; they too are imported on first access, so that the numpy-only
# subpackages (``weightspace.spectral``'s mesh path) do not load it.
_LAZY_CLASSES = {
    "LayerStats": "weightspace._task_vector",
    "LoraAdapter": "weightspace._lora",
    "LowRankTaskVector": "weightspace._lora",
    "TaskVector": "weightspace._task_vector",
}

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_CLASSES:
        value = getattr(importlib.import_module(_LAZY_CLASSES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_LAZY_CLASSES))
