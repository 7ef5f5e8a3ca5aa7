"""FLOPs of a network's inference forward pass (``retrain`` reports them as ``flops`` and ``mult_adds``)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ['count_flops']


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one inference forward pass of one image (eval mode: no auxiliary head, no drop-path), counted by
    ``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add of convolutions and matrix products; BN, ReLU,
    pooling and additions are not counted (as in the DARTS/NASNet "mult-adds")."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
