"""Which data-parallel world a call runs in (private; shared by train, unlearn and merge)."""

from __future__ import annotations

from weightspace._errors import WeightspaceValueError

__all__ = ["world_of"]


def world_of(distributed: bool | None) -> tuple[int, int]:
    """``(rank, world size)`` of the data-parallel run that ``distributed`` asks for."""
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = ready and dist.get_world_size() > 1
    if not distributed:
        return 0, 1
    if not ready:
        raise WeightspaceValueError(
            "`distributed=True` needs an initialised process group: launch with `torchrun` "
            "and call torch.distributed.init_process_group('gloo') (or 'nccl') first"
        )
    return dist.get_rank(), dist.get_world_size()
