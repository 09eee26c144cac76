"""Which weights: PEFT's ``target_modules`` grammar, presets, and common parts of two models.

* :func:`parameters` / :func:`modules` select tensors / modules of one model. ``targets`` is a
  list of exact names or dotted suffixes (``["q_proj"]`` matches
  ``layers.0.self_attn.q_proj``), a string matched with ``re.fullmatch``, or a
  :class:`Selector`; ``exclude=`` takes the same grammar.
* Presets :data:`LINEAR`, :func:`linear` (``exclude_head=True`` is PEFT's ``"all-linear"``),
  :data:`NO_NORMS` and :data:`NO_EMBEDDINGS` combine with ``&``, ``|``, ``-`` and ``~``;
  :func:`pattern` turns the list / regex grammar into a selector.
* :func:`common` pairs the tensors two different architectures share (by name and shape, by
  module structure, by an explicit prefix mapping, or by role across model families), with
  ``layers=`` to pair repeated blocks of different depths.
* A :class:`Selection` maps names of model A to names of model B (the identity for one
  model), has set algebra, and restricts or transfers task vectors and state dicts; its
  :class:`TensorView` s split fused tensors and undo transposed layouts, and
  ``str(selection)`` prints what was matched, block by block.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from weightspace import select
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    >>> select.parameters(model, select.LINEAR, exclude=["2"]).names_a
    ('0.weight', '0.bias')
"""

from __future__ import annotations

from weightspace._task_vector._views import TensorView as TensorView
from weightspace.select._blocks import Layers as Layers
from weightspace.select._common import common as common
from weightspace.select._grammar import LINEAR as LINEAR
from weightspace.select._grammar import NO_EMBEDDINGS as NO_EMBEDDINGS
from weightspace.select._grammar import NO_NORMS as NO_NORMS
from weightspace.select._grammar import Selector as Selector
from weightspace.select._grammar import Targets as Targets
from weightspace.select._grammar import linear as linear
from weightspace.select._grammar import modules as modules
from weightspace.select._grammar import parameters as parameters
from weightspace.select._grammar import pattern as pattern
from weightspace.select._selection import Selection as Selection

__all__ = [
    "LINEAR",
    "NO_EMBEDDINGS",
    "NO_NORMS",
    "Layers",
    "Selection",
    "Selector",
    "Targets",
    "TensorView",
    "common",
    "linear",
    "modules",
    "parameters",
    "pattern",
]
