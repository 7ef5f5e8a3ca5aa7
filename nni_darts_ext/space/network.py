"""``DartsCellSpace``: the DARTS cell search space as an NNI ``ModelSpace`` (one class for search and evaluation).

In search mode (no NNI arch context) every edge is a ``LayerChoice`` over named registry ops built the way the DARTS
search network builds them; inside ``nni.nas.space.model_context(arch)`` the same constructor builds the evaluation
network: affine BN, plain pools, and only the chosen edges' operations.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from nni.mutable import label_scope
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
from nni.nas.space import current_model, model_context

from .genotype import CELL_TYPES, edge_label, validate_arch
from .ops import DARTS_OPS, FactorizedReduce, Identity, ReLUConvBN, build_op, check_op_names

__all__ = ['DartsCellSpace', 'DartsCell', 'DartsNode', 'AuxiliaryHead', 'drop_path', 'reduction_indices']

_logger = logging.getLogger(__name__)

OpCandidates = Union[None, Sequence[str], Mapping[str, Sequence[str]]]


def reduction_indices(num_cells: int) -> List[int]:
    """Reduction cells sit at 1/3 and 2/3 of the depth (DARTS ``model_search.py``)."""
    return sorted({num_cells // 3, 2 * num_cells // 3})


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Drop whole samples of an op's output with probability ``drop_prob`` (DARTS ``utils.drop_path``)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


def _resolve_candidates(op_candidates: OpCandidates, cell: str, label: str) -> List[str]:
    if op_candidates is None:
        return list(DARTS_OPS)
    if isinstance(op_candidates, Mapping):
        for key in (label, cell, 'default'):
            if key in op_candidates:
                return check_op_names(op_candidates[key], f'op_candidates[{key!r}]')
        return list(DARTS_OPS)
    return check_op_names(op_candidates)


class DartsNode(nn.Module):
    """Intermediate node j: sums the chosen incoming edges (all of them, through the strategy's mixed input, in search).

    ``inputs`` is ``InputChoice(n_candidates=j, n_chosen=2)``; it carries ``edge_labels`` (the label of the
    ``LayerChoice`` on each candidate edge) so that strategies can score edges by their ops (DARTS derivation).
    """

    def __init__(self, cell: str, node: int, C: int, reduction: bool, op_candidates: OpCandidates):
        super().__init__()
        arch = current_model()
        self.fixed = arch is not None
        self.drop_path_prob = 0.0
        with label_scope(f'node{node}'):
            self.inputs = InputChoice(n_candidates=node, n_chosen=2, reduction='sum', label='inputs')
            chosen = list(self.inputs.chosen) if self.fixed else list(range(node))
            self.edges = nn.ModuleDict()
            for src in chosen:
                label = edge_label(cell, node, src)
                stride = 2 if reduction and src < 2 else 1
                if self.fixed:
                    name = arch[label]
                    candidates = {name: build_op(name, C, stride, search=False)}
                else:
                    names = _resolve_candidates(op_candidates, cell, label)
                    candidates = {name: build_op(name, C, stride, search=True) for name in names}
                choice = LayerChoice(candidates, label=f'edge{src}')
                if not self.fixed:
                    choice.edge_spec = {'channels': C, 'stride': stride}  # lets PC-DARTS rebuild the ops on C/K
                self.edges[str(src)] = choice
        if not self.fixed:  # metadata for the strategies' node-level derivation (plain attributes, ignored by NNI)
            self.inputs.edge_labels = [self.edges[str(src)].label for src in range(node)]
            self.inputs.edge_candidates = [list(self.edges[str(src)].names) for src in range(node)]
        self.chosen = chosen

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        if not self.fixed:
            return self.inputs([self.edges[str(i)](h) for i, h in enumerate(states)])
        out = 0
        for src in self.chosen:
            op = self.edges[str(src)]
            h = op(states[src])
            if self.training and self.drop_path_prob > 0 and not isinstance(op, Identity):
                h = drop_path(h, self.drop_path_prob)
            out = out + h
        return out


class DartsCell(nn.Module):
    """A DARTS cell: two preprocessed inputs, ``num_nodes`` intermediate nodes, output = concat of the nodes."""

    def __init__(self, cell: str, num_nodes: int, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool, op_candidates: OpCandidates):
        super().__init__()
        affine = current_model() is not None  # evaluation network: affine BN; search: none (DARTS)
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine)
        with label_scope(cell):
            self.nodes = nn.ModuleList(
                DartsNode(cell, node, C, reduction, op_candidates) for node in range(2, num_nodes + 2))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in self.nodes:
            states.append(node(states))
        return torch.cat(states[2:], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier at 2/3 depth. The reference assumes 8x8 features (AvgPool 5/3 -> 2x2); other sizes
    are pooled to 2x2 adaptively so the head works for every supported input size with the same parameters."""

    def __init__(self, C: int, num_classes: int, feature_size: int):
        super().__init__()
        pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False) if feature_size >= 5 else nn.Identity()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), pool, nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsCellSpace(ModelSpace):
    """The DARTS CNN search space (Liu et al. 2019, §2.1) declared with NNI ``LayerChoice`` / ``InputChoice``.

    Parameters
    ----------
    width
        Initial channels C (DARTS search: 16, evaluation: 36).
    num_cells
        Number of cells (search: 8, evaluation: 20); reduction cells at 1/3 and 2/3 of the depth.
    num_nodes
        Intermediate nodes per cell (4).
    op_candidates
        Registry op names for every edge; or a dict from cell type (``normal``/``reduce``), from edge label
        (``normal/node3/edge1``) or ``default`` to such a list. ``None``: the DARTS eight.
    in_channels, image_size, num_classes
        Input and output shape (any image size >= 8).
    stem_multiplier
        The stem outputs ``stem_multiplier * width`` channels (3).
    auxiliary
        Add the auxiliary head at 2/3 depth (evaluation; its parameters live under ``auxiliary_head``). Its logits
        are stored in ``aux_logits`` in training mode; ``forward`` returns the main logits only.
    drop_path_prob
        Drop-path probability of the fixed model's non-identity ops in training (evaluation: 0.2, ramped).
    """

    def __init__(self, width: int = 16, num_cells: int = 8, num_nodes: int = 4, op_candidates: OpCandidates = None,
                 in_channels: int = 3, image_size: int = 32, num_classes: int = 10, stem_multiplier: int = 3,
                 auxiliary: bool = False, drop_path_prob: float = 0.0):
        super().__init__()
        self._check_config(width, num_cells, num_nodes, op_candidates, in_channels, image_size, num_classes,
                           stem_multiplier, drop_path_prob)
        self.num_cells = num_cells
        self.num_nodes = num_nodes
        self.aux_logits: Optional[torch.Tensor] = None
        C_curr = stem_multiplier * width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, width
        reductions = reduction_indices(num_cells)
        self.aux_position = 2 * num_cells // 3
        self.cells = nn.ModuleList()
        size, reduction_prev, aux_channels, aux_size = image_size, False, C_p, image_size
        for i in range(num_cells):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
                size = math.ceil(size / 2)
            cell = DartsCell('reduce' if reduction else 'normal', num_nodes, C_pp, C_p, C_curr, reduction,
                             reduction_prev, op_candidates)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, num_nodes * C_curr
            if i == self.aux_position:
                aux_channels, aux_size = C_p, size
        self.auxiliary_head = AuxiliaryHead(aux_channels, num_classes, aux_size) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        self.set_drop_path_prob(drop_path_prob)

    @staticmethod
    def _check_config(width, num_cells, num_nodes, op_candidates, in_channels, image_size, num_classes,
                      stem_multiplier, drop_path_prob) -> None:
        def need(ok: bool, arg: str, value: Any, allowed: str) -> None:
            if not ok:
                raise ValueError(f'DartsCellSpace: {arg}={value!r} is invalid; allowed: {allowed}.')

        for arg, value in (('width', width), ('num_cells', num_cells), ('num_nodes', num_nodes),
                           ('in_channels', in_channels), ('stem_multiplier', stem_multiplier)):
            need(isinstance(value, int) and value >= 1, arg, value, 'an integer >= 1')
        need(isinstance(num_classes, int) and num_classes >= 2, 'num_classes', num_classes, 'an integer >= 2')
        need(isinstance(image_size, int) and image_size >= 8, 'image_size', image_size, 'an integer >= 8')
        need(0.0 <= drop_path_prob < 1.0, 'drop_path_prob', drop_path_prob, '0 <= p < 1')
        if isinstance(op_candidates, Mapping):
            for key, names in op_candidates.items():
                valid_key = key in (*CELL_TYPES, 'default') or (
                    isinstance(key, str) and key.split('/')[0] in CELL_TYPES and '/edge' in key)
                need(valid_key, 'op_candidates key', key, "'normal', 'reduce', 'default' or an edge label like "
                     "'normal/node3/edge1'")
                check_op_names(names, f'op_candidates[{key!r}]')
        elif op_candidates is not None:
            if isinstance(op_candidates, str):
                raise ValueError(f'DartsCellSpace: op_candidates must be a list of op names, got the string '
                                 f'{op_candidates!r}.')
            check_op_names(op_candidates)

    def set_drop_path_prob(self, prob: float) -> None:
        """Set the drop-path probability of every node (the retraining schedule ramps it linearly)."""
        self.drop_path_prob = prob
        for module in self.modules():
            if isinstance(module, DartsNode):
                module.drop_path_prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        self.aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                self.aux_logits = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1))

    # --- construction arguments, re-creation and freezing -------------------------------------------------------
    def init_arguments(self) -> Dict[str, Any]:
        """The constructor arguments of this space as keywords (NNI records them, positional ones by name)."""
        if self.trace_args:
            raise RuntimeError(f'{type(self).__name__} was built with positional arguments NNI could not name; '
                               'pass them as keywords.')
        return dict(self.trace_kwargs)

    def recreate(self, **overrides: Any) -> 'DartsCellSpace':
        """A new space with the same arguments except ``overrides`` (P-DARTS: deeper, fewer ops per edge)."""
        return type(self)(**{**self.init_arguments(), **overrides})

    def freeze(self, sample: Dict[str, Any]) -> nn.Module:
        """The fixed evaluation network of ``sample``, rebuilt from the constructor arguments under
        ``model_context`` (only the chosen edges' ops; never the one-shot supernet's modules)."""
        validate_arch(sample, self.simplify(), source='The arch')
        with model_context(sample):
            return type(self)(**self.init_arguments())
