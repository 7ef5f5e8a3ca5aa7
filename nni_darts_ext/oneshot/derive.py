"""Architecture derivation as pure functions of tensors (no modules, no trainer).

- DARTS (Liu et al. 2019, §2.4): each edge takes its strongest non-``none`` op; each node keeps the ``n_chosen``
  edges whose strongest non-``none`` softmax(α) weight is largest (quark0/darts ``Network.genotype``).
- PC-DARTS (Xu et al. 2020, §3.3): the edge score is softmax(β)_i · softmax(α_i)_o (edge normalisation).
- P-DARTS (Chen et al. 2019, §3.2): per-edge op pruning between stages and the limit of M skip-connects.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..space.genotype import Genotype, arch_to_genotype, count_skips
from ..space.ops import NONE_OP, SKIP_OP

_logger = logging.getLogger(__name__)

__all__ = ['strongest_op', 'select_node_inputs', 'derive_node', 'prune_ops', 'limit_skip_connects']


def strongest_op(weights: torch.Tensor, names: Sequence[str], exclude: Sequence[str] = (NONE_OP,)) -> Tuple[str, float]:
    """The op with the largest weight among ``names`` except ``exclude`` (and its weight)."""
    best, best_w = None, -float('inf')
    for name, w in zip(names, weights.tolist()):
        if name not in exclude and w > best_w:
            best, best_w = name, w
    if best is None:
        raise ValueError(f'No candidate left to choose from {list(names)} once {list(exclude)} are excluded.')
    return best, best_w


def select_node_inputs(edge_scores: Sequence[float], n_chosen: int) -> List[int]:
    """Indices of the ``n_chosen`` highest-scoring edges, sorted (ties keep the earlier edge, like ``sorted``)."""
    if n_chosen > len(edge_scores):
        raise ValueError(f'Cannot choose {n_chosen} inputs out of {len(edge_scores)} edges.')
    order = sorted(range(len(edge_scores)), key=lambda i: -edge_scores[i])
    return sorted(order[:n_chosen])


def derive_node(op_weights: Sequence[torch.Tensor], op_names: Sequence[Sequence[str]], n_chosen: int = 2,
                edge_weights: Optional[torch.Tensor] = None) -> Tuple[List[int], Dict[int, str]]:
    """Derive one node: the chosen input edges and the op of each.

    Parameters
    ----------
    op_weights
        softmax(α) of each incoming edge.
    op_names
        Candidate names of each edge (same order as its weights).
    n_chosen
        Edges kept per node (2 in DARTS cells).
    edge_weights
        softmax(β) over the incoming edges (PC-DARTS edge normalisation) or ``None`` (DARTS).

    Returns
    -------
    (chosen, ops): sorted chosen edge indices and ``{edge index: op name}`` for every edge (the strongest
    non-``none`` op, also for edges that are not chosen).
    """
    ops, scores = {}, []
    for i, (w, names) in enumerate(zip(op_weights, op_names)):
        if edge_weights is not None:
            w = w * edge_weights[i]
        ops[i], score = strongest_op(w, names)
        scores.append(score)
    return select_node_inputs(scores, n_chosen), ops


def prune_ops(op_weights: torch.Tensor, names: Sequence[str], keep: int, *, drop_none: bool = False) -> List[str]:
    """P-DARTS op pruning on one edge: keep the ``keep`` ops with the largest softmax(α), in their original order.

    ``none`` competes like any op (it can survive until the last stage, as in the reference ``get_min_k``);
    with ``drop_none`` it is removed first (the reference ``get_min_k_no_zero`` after the last stage).
    """
    candidates = [(w, i) for i, w in enumerate(op_weights.tolist()) if not (drop_none and names[i] == NONE_OP)]
    if keep < 1 or keep > len(candidates):
        raise ValueError(f'Cannot keep {keep} of the ops {list(names)}'
                         + (' without none' if drop_none else '') + '.')
    kept = sorted(i for _, i in sorted(candidates, key=lambda t: -t[0])[:keep])
    return [names[i] for i in kept]


def limit_skip_connects(derive, weights: Mapping[str, torch.Tensor], names: Mapping[str, Sequence[str]],
                        max_skip: int, cell: str = 'normal') -> Tuple[dict, List[Genotype]]:
    """P-DARTS' M limit (§3.2.2): while the derived ``cell`` has more than ``max_skip`` skip-connects, zero the
    weakest skip-connect weight among the chosen edges and derive again.

    Parameters
    ----------
    derive
        ``derive(weights) -> arch dict`` (a pure function of the per-edge op weights).
    weights
        softmax(α) per edge label; not modified.
    names
        Candidate names per edge label.

    Returns
    -------
    (arch, history): the final arch and the genotype after each step, from the unrestricted one down.
    """
    weights = {label: w.detach().clone() for label, w in weights.items()}
    arch = derive(weights)
    history = [arch_to_genotype(arch)]
    while count_skips(history[-1], cell) > max_skip:
        # the chosen skip-connect edges of this cell with their weights
        skips = []
        for label, value in arch.items():
            if not label.startswith(f'{cell}/') or not label.endswith('/inputs'):
                continue
            node_prefix = label[:-len('inputs')]
            for src in value:
                edge = f'{node_prefix}edge{src}'
                if arch[edge] == SKIP_OP:
                    skips.append((float(weights[edge][list(names[edge]).index(SKIP_OP)]), edge))
        # a skip-connect already zeroed that is still derived has no alternative op on its edge (e.g. only
        # {none, skip_connect}) and its node no other edge: zeroing it again would loop forever
        skips = [s for s in skips if s[0] > 0.0]
        if not skips:
            _logger.warning('%s cell: cannot reduce the skip-connects below %d (their edges have no other op).',
                            cell, count_skips(history[-1], cell))
            break
        _, weakest = min(skips)
        weights[weakest][list(names[weakest]).index(SKIP_OP)] = 0.0
        arch = derive(weights)
        history.append(arch_to_genotype(arch))
    return arch, history
