"""Which process this is under data parallelism (torch.distributed, or Lightning's rank before the group exists).

At the bottom of the package: the run-folder writers (``rundir``), the search space's file helpers and the one-shot
algorithms all ask it, so it imports none of them.
"""
from __future__ import annotations

__all__ = ['world_size', 'rank', 'is_rank_zero']


def _dist_ready() -> bool:
    import torch
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    import torch
    return torch.distributed.get_world_size() if _dist_ready() else 1


def rank() -> int:
    """Global rank: the process group's, else Lightning's (set before the group exists), else 0."""
    if _dist_ready():
        import torch
        return torch.distributed.get_rank()
    from pytorch_lightning.utilities import rank_zero_only
    return int(getattr(rank_zero_only, 'rank', 0) or 0)


def is_rank_zero() -> bool:
    return rank() == 0
