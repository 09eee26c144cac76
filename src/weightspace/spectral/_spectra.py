"""Per-layer weight spectra of a whole network, serial or split across ``torchrun`` ranks."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from weightspace._errors import WeightspaceValueError
from weightspace._world import world_of
from weightspace.spectral._basis import Eigenbasis, covariance_eigenbasis
from weightspace.spectral._neural import weight_covariances

if TYPE_CHECKING:
    from weightspace.io import StateDictLike
    from weightspace.select import Targets

__all__ = ["LayerSpectra", "weight_spectra"]


class LayerSpectra(NamedTuple):
    """The eigenbases of one layer's spatial and channel weight covariances.

    ``spatial`` is the eigenbasis of the ``h*w`` spatial covariance (one vector of length 1 for
    a linear layer) and ``channel`` that of the ``C_in`` input-channel covariance, both with the
    largest eigenvalue first.

    Example:
        >>> import torch
        >>> from weightspace import spectral
        >>> s = spectral.weight_spectra({"conv.weight": torch.ones(4, 2, 3, 3)})["conv.weight"]
        >>> s.spatial.values.shape, s.channel.values.shape
        ((9,), (2,))
    """

    spatial: Eigenbasis
    channel: Eigenbasis


def _cost(shape: tuple[int, ...]) -> float:
    """Rough flops of one layer: two covariance products and two eigendecompositions."""
    c_out, c_in = shape[0], shape[1]
    hw = shape[2] * shape[3] if len(shape) == 4 else 1
    return 2.0 * c_out * c_in * hw * (c_in + hw) + 9.0 * (c_in**3 + hw**3)


def _assign(costs: Mapping[str, float], world: int) -> dict[str, int]:
    """Longest-processing-time-first: each layer, largest first, to the least loaded rank."""
    heap = [(0.0, r) for r in range(world)]
    owner: dict[str, int] = {}
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        load, rank = heapq.heappop(heap)
        owner[name] = rank
        heapq.heappush(heap, (load + costs[name], rank))
    return owner


def weight_spectra(
    weights: StateDictLike,
    *,
    targets: Targets | None = None,
    k: int | None = None,
    distributed: bool | None = None,
    progress: bool = False,
) -> dict[str, LayerSpectra]:
    r"""Eigenbases of the spatial and channel weight covariances of every conv / linear layer.

    For each selected 2-D (linear) or 4-D (convolution) tensor, the two covariances of
    :func:`weight_covariances` are diagonalised with :func:`covariance_eigenbasis` — the
    per-layer spectra that Guth & Ménard compare across networks (ICLR 2024 Re-Align workshop).

    Under ``torchrun`` with an initialised process group of ``W > 1`` ranks, the layers are
    dealt out by estimated cost (largest first, to the least loaded rank), each rank
    diagonalises its own, and the results are gathered: every rank returns the serial result,
    array for array (the same LAPACK calls on the same inputs).

    Args:
        weights: An ``nn.Module``, a mapping ``name -> tensor`` or a checkpoint path.
        targets: Which tensors, in :func:`weightspace.select.parameters`' grammar (the 2-D and
            4-D ones among them are used); default: every 2-D or 4-D floating-point tensor whose
            name ends in ``weight``.
        k: Keep the ``k`` leading eigenpairs of each covariance (default: all).
        distributed: ``None`` (default) splits the layers across ranks exactly when a process
            group of more than one rank is initialised; ``True`` requires one; ``False``
            never splits.
        progress: Show a progress bar over this rank's layers.

    Returns:
        ``name -> LayerSpectra`` in the order of ``weights``.

    Raises:
        WeightspaceValueError: if no tensor qualifies or ``k`` is bad.

    Example:
        >>> import torch
        >>> from weightspace import spectral
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(),
        ...                           torch.nn.Linear(8, 2))
        >>> spectra = spectral.weight_spectra(net)
        >>> list(spectra), spectra["0.weight"].spatial.values.shape
        (['0.weight', '2.weight'], (9,))
    """
    from weightspace import select
    from weightspace.io import as_state_dict

    sd = as_state_dict(weights)
    if targets is None:
        names = [
            n
            for n in sd
            if n.endswith("weight") and sd[n].ndim in (2, 4) and sd[n].is_floating_point()
        ]
        if not names:
            raise WeightspaceValueError(
                "`weights` holds no 2-D or 4-D floating-point tensor named '...weight'; pass "
                "`targets=` to choose tensors"
            )
    else:
        chosen = list(select.parameters(sd, targets).names_a)
        names = [n for n in chosen if sd[n].ndim in (2, 4)]
        if not names:
            raise WeightspaceValueError(
                f"`targets` selects no 2-D or 4-D weight, only {chosen[:5]}; select linear and "
                "convolution weights"
            )
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise WeightspaceValueError(f"`k` must be an int >= 1 or None, got {k!r}")
    rank, world = world_of(distributed)
    owner = _assign({n: _cost(tuple(sd[n].shape)) for n in names}, world)
    mine = [n for n in names if owner[n] == rank]

    iterator: Any = mine
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(mine, desc="weight_spectra", unit="layer")
    local: dict[str, LayerSpectra] = {}
    for name in iterator:
        cov = weight_covariances(sd[name])
        local[name] = LayerSpectra(
            spatial=covariance_eigenbasis(covariance=cov.spatial, k=_clip(k, cov.spatial)),
            channel=covariance_eigenbasis(covariance=cov.channel, k=_clip(k, cov.channel)),
        )
    if world > 1:
        import torch.distributed as dist

        parts: list[dict[str, LayerSpectra] | None] = [None] * world
        dist.all_gather_object(parts, local)
        for part in parts:
            local.update(part or {})
    return {n: local[n] for n in names}


def _clip(k: int | None, cov: Any) -> int | None:
    return None if k is None else min(k, int(cov.shape[0]))
