"""The candidate-operation registry shared by the search supernet and the evaluation network.

Every op is built by ``OPS[name](C, stride, affine)`` (the DARTS code's ``operations.py`` convention).
During search BN has no affine parameters and pools are followed by a non-affine BN (DARTS ``MixedOp``);
``build_op(..., search=True)`` applies that rule so that callers never special-case pools.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict

import torch
import torch.nn as nn

__all__ = [
    'OPS', 'DARTS_OPS', 'ALL_OPS', 'POOL_OPS', 'NONE_OP', 'SKIP_OP', 'build_op', 'check_op_names',
    'Zero', 'Identity', 'ReLUConvBN', 'SepConv', 'DilConv', 'FactorizedReduce', 'Conv7x1_1x7',
]

_logger = logging.getLogger(__name__)

NONE_OP = 'none'
SKIP_OP = 'skip_connect'


class Zero(nn.Module):
    """The ``none`` op: zeros of the (strided) input shape, ``x[:, :, ::s, ::s] * 0`` as in DARTS."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class Identity(nn.Identity):
    """``skip_connect`` at stride 1 (a named subclass so drop-path and P-DARTS can recognise it)."""


class ReLUConvBN(nn.Sequential):
    """ReLU - Conv(k, stride, padding) - BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU - depthwise (dilated) conv - pointwise conv - BN."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Separable conv applied twice (DARTS): the first with the given stride, the second with stride 1."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )


class Conv7x1_1x7(nn.Sequential):  # noqa: N801 - the DARTS code's name
    """ReLU - 1x7 conv - 7x1 conv - BN (the DARTS code's ``conv_7x1_1x7``)."""

    def __init__(self, C: int, stride: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution: ReLU, two 1x1 stride-2 convs of C_out/2 channels (the second on the input shifted by one
    pixel), concatenated, then BN (DARTS ``operations.py``)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f'FactorizedReduce needs an even number of output channels, got C_out={C_out}.')
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # The shifted branch pads odd sizes back so both halves have ceil(H/2) rows (DARTS assumes even sizes).
        shifted = x[:, :, 1:, 1:]
        if x.size(2) % 2 or x.size(3) % 2:
            shifted = nn.functional.pad(shifted, (0, x.size(3) % 2, 0, x.size(2) % 2))
        out = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)
        return self.bn(out)


OpFactory = Callable[[int, int, bool], nn.Module]

# Name -> factory(C, stride, affine). The first eight are DARTS' PRIMITIVES in the DARTS code's order
# (index 0 `none`, 3 `skip_connect`); the last two are the extra ops of the DARTS code / the seed.
OPS: Dict[str, OpFactory] = {
    'none': lambda C, stride, affine: Zero(stride),
    'max_pool_3x3': lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'skip_connect': lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    'sep_conv_5x5': lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    'dil_conv_5x5': lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    'sep_conv_7x7': lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    'conv_7x1_1x7': lambda C, stride, affine: Conv7x1_1x7(C, stride, affine=affine),
}

ALL_OPS = tuple(OPS)
DARTS_OPS = ALL_OPS[:8]  # the default candidate list: original DARTS, in DARTS' order
POOL_OPS = ('max_pool_3x3', 'avg_pool_3x3')


def check_op_names(names, argument: str = 'op_candidates') -> list:
    """Validate a list of registry names; raise one ValueError naming the argument and the allowed values."""
    names = list(names)
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f'{argument}: unknown op(s) {unknown}. Allowed: {list(OPS)}.')
    if len(names) < 2:
        raise ValueError(f'{argument}: needs at least 2 candidate ops to search over, got {names}. '
                         f'Choose from {list(OPS)}.')
    if len(set(names)) != len(names):
        raise ValueError(f'{argument}: duplicate op names in {names}.')
    return names


def build_op(name: str, C: int, stride: int, *, search: bool) -> nn.Module:
    """Build registry op ``name``. ``search=True`` gives the search-network version (non-affine BN, pools + BN)."""
    if name not in OPS:
        raise ValueError(f'Unknown op {name!r}. Allowed: {list(OPS)}.')
    op = OPS[name](C, stride, not search)
    if search and name in POOL_OPS:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op
