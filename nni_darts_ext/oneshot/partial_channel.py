"""PC-DARTS partial channel connections (Xu et al., ICLR 2020, §3.2; yuhuixu1993/PC-DARTS ``model_search.py``).

On edge (i, j) only the first C/K channels of the input go through the candidate ops (built on C/K channels from
the shared op registry); the other channels bypass them (max-pooled 2x2 where the ops halve the resolution); the
two parts are concatenated and channel-shuffled with K groups, so that the next edge sees other channels::

    ō^PC(x) = shuffle_K( [ Σ_o softmax(α)_o · o(x[:, :C/K]) ,  bypass(x[:, C/K:]) ] )

The candidates the user declared at full width are dropped: the mutation hook rebuilds each named candidate with
``build_op(name, C // K, stride, search=True)`` from the ``edge_spec = {'channels': C, 'stride': s}`` metadata that
:class:`~nni_darts_ext.DartsCellSpace` puts on every edge ``LayerChoice``. A choice without that metadata (its
candidates are not registry ops) or whose C is not divisible by K cannot be made partial:
:func:`check_partial_channel_space` reports every such choice, by label and reason, in one error before any training.
"""
from __future__ import annotations

import functools
import logging
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.nn.pytorch import LayerChoice
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

from ..space.ops import OPS, SKIP_OP, build_op
from .mixed import DartsMixedLayer

__all__ = ['PartialChannelMixedLayer', 'PartialChannelError', 'channel_shuffle', 'partial_channel_problem',
           'check_partial_channel_space', 'partial_channel_hook', 'DEFAULT_K']

_logger = logging.getLogger(__name__)

DEFAULT_K = 4  # PC-DARTS CIFAR-10 (model_search.py ``self.k = 4``); ImageNet uses 2


class PartialChannelError(ValueError):
    """A search space (or one of its ``LayerChoice``) the partial-channel mixed op cannot apply to."""


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle (PC-DARTS ``channel_shuffle``): view the C channels as (groups, C/groups),
    transpose, flatten. Output channel ``c * groups + g`` is input channel ``g * (C / groups) + c``.

    A ``channels_last`` input stays ``channels_last`` (the permutation is done on the physical last dimension).
    """
    if groups == 1:
        return x
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f'channel_shuffle: {c} channels cannot be split into {groups} groups.')
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups).transpose(3, 4).reshape(b, h, w, c)
        return y.permute(0, 3, 1, 2)
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def partial_channel_problem(module: nn.Module, k: int) -> Optional[str]:
    """Why ``module`` (a ``LayerChoice``) cannot become a partial-channel mixed op with ``k``, or None if it can."""
    spec = getattr(module, 'edge_spec', None)
    if not isinstance(spec, dict) or 'channels' not in spec or 'stride' not in spec:
        return ("its candidates are not registry ops of a DartsCellSpace edge (no edge_spec={'channels': C, "
                "'stride': s} attribute), so they cannot be rebuilt on C/K channels")
    names = list(module.names)
    unknown = [n for n in names if n not in OPS]
    if unknown:
        return f'candidate(s) {unknown} are not in the op registry (allowed: {list(OPS)})'
    channels, stride = spec['channels'], spec['stride']
    if channels % k:
        return f'its C={channels} channels are not divisible by k={k} (choose k dividing C, or another width)'
    if stride != 1 and SKIP_OP in names and (channels // k) % 2:
        return (f'C/k={channels}//{k}={channels // k} is odd, but {SKIP_OP} on a stride-{stride} edge '
                '(FactorizedReduce) needs an even number of channels')
    return None


def _is_plain_layer_choice(module: nn.Module) -> bool:
    return isinstance(module, LayerChoice) and not isinstance(module, BaseSuperNetModule)


def check_partial_channel_space(model: nn.Module, k: int) -> None:
    """Raise one :class:`PartialChannelError` naming every ``LayerChoice`` of ``model`` that cannot be made partial."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise PartialChannelError(f'k={k!r} is invalid; allowed: an integer >= 1 (PC-DARTS: 4).')
    problems: Dict[str, List[str]] = {}  # reason -> labels (each label once: cells share labels)
    for _, module in model.named_modules():
        if _is_plain_layer_choice(module):
            reason = partial_channel_problem(module, k)
            if reason is not None and module.label not in problems.setdefault(reason, []):
                problems[reason].append(module.label)
    problems = {reason: labels for reason, labels in problems.items() if labels}
    if problems:
        lines = []
        for reason, labels in problems.items():
            shown = ', '.join(repr(label) for label in labels[:4])
            more = f' and {len(labels) - 4} more' if len(labels) > 4 else ''
            lines.append(f'  - LayerChoice {shown}{more}: {reason}')
        count = len({label for labels in problems.values() for label in labels})
        raise PartialChannelError(f'PC-DARTS partial channels (k={k}) cannot apply to {count} choice(s) of this '
                                  'space:\n' + '\n'.join(lines))


class PartialChannelMixedLayer(DartsMixedLayer):
    """PC-DARTS mixed op on 1/K of the channels (``MixedOp`` of PC-DARTS ``model_search.py``).

    Parameters
    ----------
    paths
        Named candidates built on ``channels // k`` channels.
    alpha, softmax, label
        As :class:`DartsMixedLayer` (α is shared by label).
    k
        1/k of the channels go through the ops; ``k == 1`` is exactly :class:`DartsMixedLayer`.
    channels
        C, the number of input (and output) channels of the edge.
    """

    def __init__(self, paths, alpha: torch.Tensor, softmax: nn.Module, label: str, *, k: int, channels: int):
        super().__init__(paths, alpha, softmax, label)
        if channels % k:
            raise PartialChannelError(f"LayerChoice '{label}': C={channels} is not divisible by k={k}.")
        self.k = k
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pylint: disable=arguments-differ
        if x.size(1) != self.channels:
            raise ValueError(f"{self.label}: expected {self.channels} input channels, got {x.size(1)}.")
        if self.k == 1:
            return super().forward(x)
        part = self.channels // self.k
        through, bypass = x[:, :part], x[:, part:]
        out = super().forward(through)
        if out.shape[-2:] != x.shape[-2:]:  # stride-2 edge: halve the bypassed part too (ceil: odd sizes match ops)
            bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([out, bypass], dim=1), self.k)

    def extra_repr(self) -> str:
        return f'label={self.label!r}, k={self.k}, channels={self.channels}'

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs, *, k: Optional[int] = None):
        """Mutation hook: a ``LayerChoice`` with ``edge_spec`` -> partial-channel mixed op on rebuilt C/K ops.

        ``k`` comes from the keyword (see :func:`partial_channel_hook`), else ``mutate_kwargs['pc_k']``, else 4.
        Any other ``LayerChoice`` raises :class:`PartialChannelError` (its label and the reason).
        """
        if not _is_plain_layer_choice(module):
            return None
        k = k if k is not None else mutate_kwargs.get('pc_k', DEFAULT_K)
        reason = partial_channel_problem(module, k)
        if reason is not None:
            raise PartialChannelError(f"PC-DARTS partial channels (k={k}) cannot apply to LayerChoice "
                                      f"'{module.label}': {reason}.")
        if module.label not in memo:
            raise KeyError(f'LayerChoice {module.label} not found in memo.')
        channels, stride = module.edge_spec['channels'], module.edge_spec['stride']
        paths = {op: build_op(op, channels // k, stride, search=True) for op in module.names}
        return cls(paths, memo[module.label], mutate_kwargs.get('softmax', nn.Softmax(-1)), module.label,
                   k=k, channels=channels)


def partial_channel_hook(k: int = DEFAULT_K):
    """The mutation hook of :class:`PartialChannelMixedLayer` with a fixed ``k`` (for ``mutation_hooks=[...]``)."""
    return functools.partial(PartialChannelMixedLayer.mutate, k=k)
