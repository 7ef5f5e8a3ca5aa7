"""The Lightning / supernet side of P-DARTS (Chen et al., ICCV 2019; chenxin061/pdarts).

- :class:`SkipConnectDropout` and :class:`PDartsMixedLayer`: operation-level dropout after every stride-1
  ``skip_connect`` candidate of the search mixed ops (P-DARTS §3.3, "search space regularisation"); the reference
  appends ``nn.Dropout(p)`` to the ``Identity`` op of ``MixedOp`` (``model_search.py``), reduction-cell input edges
  (``FactorizedReduce``) get none. The mixed op can also be built on a subset of a ``LayerChoice``'s candidates (the
  ops that survived the previous stage) for spaces whose edges cannot be re-declared per edge (NAS-Bench-201).
- :func:`skip_dropout_rate`: the reference's per-stage schedule of that dropout (``train_search.py``).
- :func:`derive_cells`, :func:`skip_limited_arch`: the final derivation with at most M skip-connects in the normal cell
  (P-DARTS §3.3; the reference's ``delete_min_sk_prob`` / ``keep_1_on`` / ``keep_2_branches`` loop);
  :func:`skip_limited_edges`: the same limit on a space without node inputs (every edge kept, NAS-Bench-201).
- :class:`PDartsSearchModule`: one stage of the search (sets the dropout each epoch, logs the stage, exports with the
  M limit after the last stage).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.nn.pytorch import LayerChoice

from ..space.genotype import Genotype, arch_to_genotype, count_skips, unused_edge_value
from ..space.ops import NONE_OP, SKIP_OP
from .derive import derive_node, limit_skip_connects, prune_ops, strongest_op
from .mixed import DartsMixedLayer, _CellNodeInputMixin
from .module import DartsSearchConfig, DartsSearchModule

__all__ = ['skip_dropout_rate', 'SkipConnectDropout', 'PDartsMixedLayer', 'PDartsStage', 'prune_edges', 'derive_cells',
           'skip_limited_arch', 'skip_limited_edges', 'skip_count_genotypes', 'PDartsSearchModule']

_logger = logging.getLogger(__name__)

DROPOUT_DECAY = 0.2  # the reference's `scale_factor` in p = rate * exp(-(epoch - warmup) * 0.2)


def skip_dropout_rate(rate: float, epoch: int, epochs: int, warmup: int) -> float:
    """The skip-connect dropout probability of ``epoch`` (0-based) in a stage of ``epochs`` epochs.

    Reference schedule (chenxin061/pdarts ``train_search.py``): ``rate * (E - e - 1) / E`` during the ``warmup``
    weight-only epochs, then ``rate * exp(-0.2 * (e - warmup))`` (which jumps back to ``rate`` at ``e = warmup``).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f'skip-connect dropout rate={rate!r} is invalid; allowed: 0 <= rate < 1.')
    if epochs < 1 or not 0 <= epoch:
        raise ValueError(f'epoch={epoch!r} of epochs={epochs!r} is invalid.')
    if epoch < warmup:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-DROPOUT_DECAY * (epoch - warmup))


class SkipConnectDropout(nn.Module):
    """``op`` (a stride-1 ``skip_connect``) followed by dropout with probability ``p`` (set from outside each epoch)."""

    def __init__(self, op: nn.Module, p: float = 0.0):
        super().__init__()
        self.op = op
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.op(x)
        if self.training and self.p > 0:
            out = F.dropout(out, self.p, training=True)
        return out

    def extra_repr(self) -> str:
        return f'p={self.p:.4f}'


class PDartsMixedLayer(DartsMixedLayer):
    """DARTS mixed op whose stride-1 ``skip_connect`` candidates (an ``nn.Identity``: the registry's
    :class:`~nni_darts_ext.space.ops.Identity`, NNI's NAS-Bench-201 ``skip_connect``) are wrapped in
    :class:`SkipConnectDropout` (the search supernet only; exported names are unchanged)."""

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs, *, candidates: Optional[Mapping[str, Sequence[str]]] = None):
        """Mutation hook. ``candidates`` (label -> op names) restricts a choice to those of its candidates, in its own
        order, with α over them only (created here, shared by the label): P-DARTS' pruned stages on a space that
        cannot re-declare its edges per edge. Labels it does not name keep all their candidates."""
        if type(module) is LayerChoice:
            if module.label not in memo:
                raise KeyError(f'LayerChoice {module.label} not found in memo.')
            names = list(module.names)
            alpha = memo[module.label]
            if candidates is not None and module.label in candidates and list(candidates[module.label]) != names:
                keep = list(candidates[module.label])
                unknown = [n for n in keep if n not in names]
                if unknown or len(set(keep)) != len(keep) or not keep:
                    raise ValueError(f'P-DARTS: LayerChoice {module.label!r} cannot keep {keep}: its candidates are '
                                     f'{names}.')
                names = [n for n in names if n in keep]
                if alpha.numel() != len(names):  # the label's first module: α over the surviving ops
                    alpha = memo[module.label] = nn.Parameter(torch.randn(len(names)) * 1E-3)
            paths = {n: SkipConnectDropout(module[n]) if isinstance(module[n], nn.Identity) else module[n]
                     for n in names}
            if not all(isinstance(n, str) for n in names):
                paths = list(paths.values())
            return cls(paths, alpha, mutate_kwargs.get('softmax', nn.Softmax(-1)), module.label)
        return None


@dataclass(frozen=True)
class PDartsStage:
    """What one P-DARTS stage searches: ``index`` (0-based) of ``num_stages``, the supernet depth, the candidate ops of
    every edge (label -> names), the initial skip-connect dropout rate, the epochs, and the M limit (final stage)."""

    index: int
    num_stages: int
    num_cells: int
    candidates: Mapping[str, Tuple[str, ...]]
    skip_dropout: float
    epochs: int
    max_skip: Optional[int] = None
    #: a space without cell nodes (NAS-Bench-201): the edges whose skip-connects the M limit counts (every edge is
    #: kept, each with its strongest op); None: DARTS cells (the limit applies to the normal cell)
    skip_edges: Optional[Tuple[str, ...]] = None

    @property
    def final(self) -> bool:
        return self.index == self.num_stages - 1

    @property
    def num_ops(self) -> int:
        counts = {len(names) for names in self.candidates.values()}
        return counts.pop() if len(counts) == 1 else max(counts)


# --- pruning and derivation with the M limit (pure functions) ----------------------------------------------------

def prune_edges(weights: Mapping[str, torch.Tensor], names: Mapping[str, Sequence[str]], keep: int,
                drop_none: bool = False) -> Dict[str, List[str]]:
    """P-DARTS pruning between stages: every edge keeps its ``keep`` strongest ops by softmax(α) (original order).
    ``none`` competes like any op (reference ``get_min_k``) unless ``drop_none``."""
    return {label: prune_ops(weights[label], names[label], min(keep, len(names[label])), drop_none=drop_none)
            for label in names}


def derive_cells(weights: Mapping[str, torch.Tensor], names: Mapping[str, Sequence[str]],
                 nodes: Mapping[str, Sequence[str]], n_chosen: int = 2) -> Dict[str, Any]:
    """The DARTS derivation of every node (the same rule as :class:`~nni_darts_ext.oneshot.mixed.DartsMixedInput`).

    Parameters
    ----------
    weights
        softmax(α) per edge label.
    names
        Candidate names per edge label.
    nodes
        Per node-inputs label (``normal/node3/inputs``) the labels of its incoming edges, in input order.
    """
    arch: Dict[str, Any] = {}
    for inputs, edges in nodes.items():
        chosen, ops = derive_node([weights[e] for e in edges], [names[e] for e in edges], n_chosen)
        arch[inputs] = chosen
        for i, edge in enumerate(edges):
            arch[edge] = ops[i] if i in chosen else unused_edge_value(names[edge])
    return arch


def skip_limited_arch(weights: Mapping[str, torch.Tensor], names: Mapping[str, Sequence[str]],
                      nodes: Mapping[str, Sequence[str]], max_skip: int, cell: str = 'normal',
                      n_chosen: int = 2) -> Dict[str, Any]:
    """The derived cells with at most ``max_skip`` skip-connects in ``cell`` (P-DARTS' M limit)."""
    arch, _ = limit_skip_connects(lambda w: derive_cells(w, names, nodes, n_chosen), weights, names, max_skip, cell)
    return arch


def skip_limited_edges(weights: Mapping[str, torch.Tensor], names: Mapping[str, Sequence[str]],
                       edges: Sequence[str], max_skip: int) -> Dict[str, str]:
    """P-DARTS' M limit on a space whose edges are all kept (NAS-Bench-201): each edge takes its strongest
    non-``none`` op; while more than ``max_skip`` of ``edges`` take ``skip_connect``, the one with the weakest
    skip-connect weight drops it for its next strongest op other than ``none``, or ``none`` when that is its only
    other op (in a DARTS cell the node would then use another input edge: this edge is dropped). An edge whose
    only op is ``skip_connect`` keeps it (a warning says so)."""
    arch = {label: strongest_op(weights[label], names[label])[0] for label in edges}
    while sum(op == SKIP_OP for op in arch.values()) > max_skip:
        skips = [(float(weights[e][list(names[e]).index(SKIP_OP)]), e) for e in edges
                 if arch[e] == SKIP_OP and set(names[e]) - {SKIP_OP}]
        if not skips:
            _logger.warning('cannot reduce the skip-connects below %d (their edges have no other op).',
                            sum(op == SKIP_OP for op in arch.values()))
            break
        _, weakest = min(skips)
        others = set(names[weakest]) - {NONE_OP, SKIP_OP}
        arch[weakest] = strongest_op(weights[weakest], names[weakest], exclude=(NONE_OP, SKIP_OP))[0] if others \
            else NONE_OP
    return arch


def skip_count_genotypes(weights: Mapping[str, torch.Tensor], names: Mapping[str, Sequence[str]],
                         nodes: Mapping[str, Sequence[str]], cell: str = 'normal',
                         n_chosen: int = 2) -> List[Tuple[int, Genotype]]:
    """``[(k, genotype)]`` for every skip count k from the unrestricted one down to 0 (as the reference logs them):
    the genotype the M procedure reaches for M = k. Counts it cannot reach (an edge with no other op) are absent."""
    _, history = limit_skip_connects(lambda w: derive_cells(w, names, nodes, n_chosen), weights, names, 0, cell)
    result = []
    for k in range(count_skips(history[0], cell), -1, -1):
        reached = [g for g in history if count_skips(g, cell) <= k]
        if reached:
            result.append((k, reached[0]))
    return result


# --- the Lightning module of one stage ----------------------------------------------------------------------------

class PDartsSearchModule(DartsSearchModule):
    """One P-DARTS stage: DARTS alternating updates (first order by default) plus the skip-connect dropout schedule.

    After the last stage :meth:`export` applies the M limit to the normal cell; :meth:`unrestricted_export` is the
    plain DARTS derivation.
    """

    def __init__(self, training_module: nn.Module, config: DartsSearchConfig, stage: PDartsStage):
        super().__init__(training_module, config)
        self.stage = stage
        self.skip_dropout_history: List[Tuple[int, float]] = []

    # --- structure of the supernet --------------------------------------------------------------------------------
    def skip_dropout_modules(self) -> List[SkipConnectDropout]:
        return [m for m in self.training_module.modules() if isinstance(m, SkipConnectDropout)]

    def edge_weights(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, List[str]]]:
        """softmax(α) and the candidate names of every edge (mixed op), by label."""
        weights, names = {}, {}
        for module in self.supernet_modules():
            if isinstance(module, DartsMixedLayer) and module.label not in weights:
                weights[module.label] = module._softmax(module._arch_alpha).detach().cpu()
                names[module.label] = list(module.names)
        return weights, names

    def cell_nodes(self) -> Tuple[Dict[str, List[str]], int]:
        """Per node-inputs label its incoming edge labels, and the number of inputs each node keeps."""
        nodes, n_chosen = {}, set()
        for module in self.supernet_modules():
            if isinstance(module, _CellNodeInputMixin) and module.label not in nodes:
                nodes[module.label] = list(module.edge_labels)
                n_chosen.add(module.n_chosen)
        if len(n_chosen) > 1:
            raise ValueError(f'P-DARTS expects the same number of inputs per node, got {sorted(n_chosen)}.')
        return nodes, n_chosen.pop() if n_chosen else 2

    # --- export -----------------------------------------------------------------------------------------------------
    def unrestricted_export(self) -> Dict[str, Any]:
        """The DARTS derivation (strongest non-``none`` op per edge, top-2 edges per node), without the M limit."""
        return super().export()

    def export(self) -> Dict[str, Any]:
        arch = self.unrestricted_export()
        if self.stage.final and self.stage.max_skip is not None and self.stage.skip_edges is not None:
            weights, names = self.edge_weights()
            arch.update(skip_limited_edges(weights, names, self.stage.skip_edges, self.stage.max_skip))
        elif self.stage.final and self.stage.max_skip is not None:
            weights, names = self.edge_weights()
            nodes, n_chosen = self.cell_nodes()
            arch.update(skip_limited_arch(weights, names, nodes, self.stage.max_skip, 'normal', n_chosen))
        return arch

    def skip_count_genotypes(self) -> List[Tuple[int, Genotype]]:
        if self.stage.skip_edges is not None:  # no DARTS cells, no genotypes
            return []
        weights, names = self.edge_weights()
        nodes, n_chosen = self.cell_nodes()
        return skip_count_genotypes(weights, names, nodes, 'normal', n_chosen)

    # --- hooks ------------------------------------------------------------------------------------------------------
    def on_train_start(self):
        stage = self.stage
        _logger.info('P-DARTS stage %d/%d: %d cells, %d ops per edge, skip-connect dropout %.3g, %d epochs '
                     '(%d weight-only)%s', stage.index + 1, stage.num_stages, stage.num_cells, stage.num_ops,
                     stage.skip_dropout, stage.epochs, self.config.warmup_epochs,
                     f', then at most {stage.max_skip} skip-connects in the '
                     f'{"normal cell" if stage.skip_edges is None else "searched edges"}' if stage.final
                     and stage.max_skip is not None else '')
        _logger.info('P-DARTS stage %d surviving ops: %s', stage.index + 1,
                     {label: list(names) for label, names in stage.candidates.items()})
        return super().on_train_start()

    def on_train_epoch_start(self):
        epoch = self.trainer.current_epoch
        p = skip_dropout_rate(self.stage.skip_dropout, epoch, self.stage.epochs, self.config.warmup_epochs)
        for module in self.skip_dropout_modules():
            module.p = p
        self.skip_dropout_history.append((epoch, p))
        self.log('skip_dropout', p)
        self.log('stage', float(self.stage.index + 1))
        self.log('num_cells', float(self.stage.num_cells))
        return super().on_train_epoch_start()

    def log_architecture(self) -> None:
        super().log_architecture()
        if self.genotype_history:
            self.genotype_history[-1].update(stage=self.stage.index + 1, num_cells=self.stage.num_cells)
        if self.stage.final and self.stage.max_skip is not None:
            try:
                genotype = arch_to_genotype(self.unrestricted_export())
            except ValueError:
                return
            self.log('normal_skip_connects_unrestricted', float(count_skips(genotype, 'normal')))
