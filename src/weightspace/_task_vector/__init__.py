r"""Task vectors: immutable, lazily evaluated mappings ``name -> delta tensor``.

A task vector is the difference between the weights of a fine-tuned model and those of the
model it was fine-tuned from (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023,
`arXiv:2212.04089 <https://arxiv.org/abs/2212.04089>`_):

.. math::

    \tau = \theta_{\mathrm{ft}} - \theta_{\mathrm{base}}, \qquad
    \theta_{\mathrm{new}} = \theta_{\mathrm{base}} + \lambda \sum_i \tau_i .

Laziness and memory
-------------------
A value may be a tensor or a zero-argument callable that computes it. Callables are evaluated on
every ``__getitem__`` and **not cached**, so that a vector built over two checkpoints that do
not fit in memory only ever holds the tensors currently in use. Operations (``+``, ``*``,
:meth:`TaskVector.map`, ...) build new lazy vectors and compute nothing; reductions
(:meth:`TaskVector.norm`, :meth:`TaskVector.dot`, ...) and :meth:`TaskVector.apply_to` read one
key at a time. Call :meth:`TaskVector.materialize` to compute every value once and keep it.

References, not copies
----------------------
A vector built with :meth:`TaskVector.from_models` from ``nn.Module`` objects or in-memory state
dicts holds references to their tensors: if those tensors are later changed in place, the vector
changes with them. :meth:`TaskVector.materialize` takes a snapshot.

Exactness
---------
For a vector built directly from two models, ``tv.apply_to(base, scale=1.0)`` reproduces the
fine-tuned weights bit for bit. This cannot be obtained by plain arithmetic: neither
``b + (f - b)`` in float32 nor the same sum in float64 (then rounded once to float32) is always
``f``. In float64, ``f - b`` is exact only when the binary exponents of ``f`` and ``b`` differ
by at most 28; for instance with ``b = 0.7315437`` and ``f = 1.4086391e-11`` (float32), the
float64 route returns ``1.4086399e-11``. Such pairs do occur (a weight that crosses zero).
The vector therefore keeps a reference to the fine-tuned and base tensors of every key it
built with :meth:`TaskVector.from_models`; at scale 1, every element of the target whose value
equals the original base element is replaced by the fine-tuned element itself, which is exact
by construction, and the remaining elements use the arithmetic route. Operations that do not
change values (``tv * 1``, :meth:`~TaskVector.restrict`, :meth:`~TaskVector.transfer`,
:meth:`~TaskVector.intersection`) keep those references; all others drop them.

Buffers
-------
Floating-point buffers (such as BatchNorm ``running_mean`` / ``running_var``) are part of a
state dict and are treated as any other floating-point tensor: they get a delta and are scaled
like weights. Integer tensors (``num_batches_tracked``, counters) are never scaled: they are
left out of the vector, and :meth:`TaskVector.apply_to` copies them from the base (or from the
fine-tuned model with ``integer="finetuned"`` in :meth:`TaskVector.from_models`).

Layout
------
``_values`` holds the lazy values and the shared checks, ``_base`` the storage and the mapping
protocol, ``_reduce`` the reductions and :class:`LayerStats`, ``_apply`` the application to a
model, ``_interfaces`` what the class expects from :mod:`weightspace.select` and
``weightspace._lora`` (both import this package, never the reverse), ``_views`` the tensor
views that :meth:`TaskVector.transfer` applies for a selection (split, fuse, transpose), and
``_vector`` the :class:`TaskVector` class itself.
"""

from __future__ import annotations

from weightspace._task_vector._base import KeysMode as KeysMode
from weightspace._task_vector._interfaces import SupportsNameMapping as SupportsNameMapping
from weightspace._task_vector._reduce import LayerStats as LayerStats
from weightspace._task_vector._vector import TaskVector as TaskVector

__all__ = ["KeysMode", "LayerStats", "SupportsNameMapping", "TaskVector"]
