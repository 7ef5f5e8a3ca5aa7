"""Supernet modules that replace ``LayerChoice`` / ``InputChoice`` during a search (NNI mutation hooks).

- :class:`DartsMixedLayer`: softmax(α)-weighted sum of the candidates (DARTS eq. 2); exports the strongest
  non-``none`` op (``none`` is found by name; it is never computed, its output is zero).
- :class:`DartsMixedInput`: a cell node's inputs as in original DARTS: the unweighted sum of all incoming edges;
  it exports the top-``n_chosen`` edges by their strongest non-``none`` op weight, and for every edge of the node
  its op (``none`` on edges the node does not use).
- :class:`EdgeNormalizedInput`: PC-DARTS edge normalisation: the softmax(β)-weighted sum, exported by the product
  softmax(β)·softmax(α).

The node modules only apply to an ``InputChoice`` that carries ``edge_labels`` / ``edge_candidates`` metadata
(``DartsCellSpace`` sets them); other input choices keep NNI's own differentiable input.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from nni.nas.nn.pytorch import InputChoice, LayerChoice
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedInput, DifferentiableMixedLayer

from ..space.genotype import unused_edge_value
from ..space.ops import NONE_OP
from .derive import derive_node, strongest_op

__all__ = ['DartsMixedLayer', 'DartsMixedInput', 'EdgeNormalizedInput', 'is_cell_node_input']

_logger = logging.getLogger(__name__)


def is_cell_node_input(module: nn.Module) -> bool:
    return type(module) is InputChoice and hasattr(module, 'edge_labels') and hasattr(module, 'edge_candidates')


class DartsMixedLayer(DifferentiableMixedLayer):
    """DARTS mixed op: Σ_o softmax(α)_o · o(x) (DARTS eq. 2)."""

    def forward(self, *args, **kwargs):
        weights = self._softmax(self._arch_alpha)
        out = None
        for i, name in enumerate(self.names):
            if name == NONE_OP:  # Zero contributes nothing; softmax still normalises over it
                continue
            y = weights[i] * self[name](*args, **kwargs)
            out = y if out is None else out + y
        return out

    def export(self, memo):
        if self.label in memo:
            return {}
        weights = self._softmax(self._arch_alpha).detach()
        return {self.label: strongest_op(weights, self.names)[0] if len(set(self.names) - {NONE_OP}) else NONE_OP}

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is LayerChoice:
            if module.label not in memo:
                raise KeyError(f'LayerChoice {module.label} not found in memo.')
            return cls(module.candidates, memo[module.label], mutate_kwargs.get('softmax', nn.Softmax(-1)),
                       module.label)
        return None


class _CellNodeInputMixin:
    """Node-level export shared by the DARTS and PC-DARTS node inputs."""

    label: str
    n_chosen: int
    edge_labels: List[str]
    edge_candidates: List[List[str]]
    _edge_alphas: tuple
    _softmax: nn.Module

    def _bind_edges(self, module: InputChoice, memo: dict) -> None:
        self.edge_labels = list(module.edge_labels)
        self.edge_candidates = [list(names) for names in module.edge_candidates]
        missing = [label for label in self.edge_labels if label not in memo]
        if missing:
            raise KeyError(f'InputChoice {module.label}: no architecture parameter for its edges {missing}.')
        # references to the edges' shared α (a tuple is not registered as parameters of this module)
        self._edge_alphas = tuple(memo[label] for label in self.edge_labels)

    def edge_weights(self) -> Optional[torch.Tensor]:
        """softmax over the incoming edges (PC-DARTS β) or None (DARTS)."""
        return None

    def export(self, memo):
        if self.label in memo:
            return {}
        op_weights = [self._softmax(a).detach() for a in self._edge_alphas]
        beta = self.edge_weights()
        chosen, ops = derive_node(op_weights, self.edge_candidates, self.n_chosen,
                                  None if beta is None else beta.detach())
        result: Dict[str, Any] = {self.label: chosen}
        for i, (label, names) in enumerate(zip(self.edge_labels, self.edge_candidates)):
            if label not in memo:
                result[label] = ops[i] if i in chosen else unused_edge_value(names)
        return result


class DartsMixedInput(_CellNodeInputMixin, InputChoice, BaseSuperNetModule):
    """Original DARTS node: x_j = Σ_{i<j} ō_ij(x_i), no weights (DARTS eq. 1); exported by edge strength."""

    def __init__(self, module: InputChoice, memo: dict, softmax: nn.Module):
        super().__init__(module.n_candidates, n_chosen=module.n_chosen, reduction='sum', label=module.label)
        self._softmax = softmax
        self._bind_edges(module, memo)

    def resample(self, memo):
        return {}

    def export_probs(self, memo):
        return {}

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if is_cell_node_input(module):
            return cls(module, memo, mutate_kwargs.get('softmax', nn.Softmax(-1)))
        return None


class EdgeNormalizedInput(_CellNodeInputMixin, DifferentiableMixedInput):
    """PC-DARTS node: x_j = Σ_i softmax(β_j)_i · ō_ij(x_i) (PC-DARTS eq. 4); β is this module's ``_arch_alpha``."""

    def __init__(self, module: InputChoice, memo: dict, softmax: nn.Module):
        super().__init__(module.n_candidates, module.n_chosen, memo[module.label], softmax, module.label)
        self._bind_edges(module, memo)

    def edge_weights(self) -> torch.Tensor:
        return self._softmax(self._arch_alpha)

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if is_cell_node_input(module):
            if module.label not in memo:
                raise KeyError(f'InputChoice {module.label} not found in memo.')
            return cls(module, memo, mutate_kwargs.get('softmax', nn.Softmax(-1)))
        return None
