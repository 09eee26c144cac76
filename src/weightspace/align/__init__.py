"""Permutation alignment of hidden units: Git Re-Basin and the loss barrier.

Two networks trained from different seeds compute similar functions with their hidden units in
different orders. Reordering the units of one (a permutation that leaves its function exactly
unchanged) to line them up with the other often removes most of the loss barrier on the
straight line between them (Ainsworth, Hayase & Srinivasa, "Git Re-Basin: Merging Models
modulo Permutation Symmetries", ICLR 2023, `arXiv:2209.04836
<https://arxiv.org/abs/2209.04836>`_; Entezari et al., "The Role of Permutation Invariance in
Linear Mode Connectivity of Neural Networks", ICLR 2022, `arXiv:2110.06296
<https://arxiv.org/abs/2110.06296>`_).

* **Structure.** :func:`permutation_spec` follows one forward pass of a model (with
  ``torch.fx``, or by recording its torch calls) and returns a :class:`PermutationSpec`: the
  permutation groups (hidden layers, channels, residual streams) and which axes of which
  state-dict tensors each one moves. Specs can also be written by hand.
* **Permutations.** :class:`Permutation` (group -> index tensor) applies to a state dict,
  inverts and composes; :func:`permute` returns a permuted copy of a model.
* **Matching.** :func:`weight_matching` (coordinate descent over linear assignment problems)
  and :func:`activation_matching` (correlation of activations on data).
* **Paths.** :func:`interpolate`, :func:`loss_barrier` (:class:`BarrierResult`) and
  :func:`reset_bn_stats` for networks with batch norm.

:meth:`Permutation.apply`, :func:`permute`, :func:`weight_matching`, :func:`interpolate` and
:func:`loss_barrier` take weights as a module, a state dict or a checkpoint path (see
:func:`weightspace.io.as_state_dict`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from weightspace import align
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
    ...                     nn.Linear(16, 3))
    >>> spec = align.permutation_spec(net, torch.zeros(2, 4))
    >>> shuffled = align.permute(net, spec, align.Permutation.random(spec, seed=0))
    >>> x = torch.randn(8, 4)
    >>> torch.allclose(net(x), shuffled(x), atol=1e-6)
    True
    >>> perm = align.weight_matching(spec, net, shuffled)
    >>> aligned = perm.apply(spec, shuffled.state_dict())
    >>> all(torch.equal(aligned[k], v) for k, v in net.state_dict().items())
    True
"""

from __future__ import annotations

from weightspace.align._barrier import BarrierResult as BarrierResult
from weightspace.align._barrier import interpolate as interpolate
from weightspace.align._barrier import loss_barrier as loss_barrier
from weightspace.align._barrier import reset_bn_stats as reset_bn_stats
from weightspace.align._matching import activation_matching as activation_matching
from weightspace.align._matching import weight_matching as weight_matching
from weightspace.align._permutation import Permutation as Permutation
from weightspace.align._permutation import permute as permute
from weightspace.align._spec import Axis as Axis
from weightspace.align._spec import AxisRef as AxisRef
from weightspace.align._spec import PermutationSpec as PermutationSpec
from weightspace.align._trace import permutation_spec as permutation_spec

__all__ = [
    "Axis",
    "AxisRef",
    "BarrierResult",
    "Permutation",
    "PermutationSpec",
    "activation_matching",
    "interpolate",
    "loss_barrier",
    "permutation_spec",
    "permute",
    "reset_bn_stats",
    "weight_matching",
]
