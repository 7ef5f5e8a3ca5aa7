"""Which spaces P-DARTS can search, checked before anything trains (one clear error naming what is missing).

P-DARTS re-creates the space for every stage, deeper and with fewer ops per edge (Chen et al., ICCV 2019, section
3.2), so a space qualifies in one of two ways: DARTS cells (``normal/node2/edge0`` / ``normal/node2/inputs`` labels)
and ``recreate(num_cells=..., op_candidates=...)``, as :class:`~nni_darts_ext.DartsCellSpace`; or declared edges
(``pdarts_edges()`` and ``recreate()``, every stage at the space's own depth), as
:class:`~nni_darts_ext.groundtruth.space.NasBench201Grey`.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

__all__ = ['SPACE_REQUIREMENT', 'EDGE_SPACE_REQUIREMENT', 'is_edge_space', 'check_space', 'edge_candidates']

EDGE_LABEL = re.compile(r'^(normal|reduce)/node\d+/edge\d+$')
INPUTS_LABEL = re.compile(r'^(normal|reduce)/node\d+/inputs$')

EDGE_SPACE_REQUIREMENT = (
    'a space without DARTS cells must provide `pdarts_edges()` returning {<LayerChoice label>: [<op names>]} for every '
    'choice of the space, and `recreate()` returning a fresh copy of itself, as nni_darts_ext.groundtruth.space.'
    'NasBench201Grey does')

SPACE_REQUIREMENT = (
    'PDartsStrategy re-creates the search space for every stage, deeper and with fewer ops per edge, so the space '
    'must provide `recreate(num_cells=<int>, op_candidates={<edge label>: [<op names>]})` returning a new space of '
    "the same kind, and DARTS cell labels ('normal/node2/edge0' for the ops, 'normal/node2/inputs' for the inputs "
    'of a node), as nni_darts_ext.DartsCellSpace does')


def is_edge_space(space: Any) -> bool:
    """Whether ``space`` declares its searched edges (``pdarts_edges()``, e.g. NAS-Bench-201) instead of DARTS
    cells."""
    return callable(getattr(space, 'pdarts_edges', None))


def edge_candidates(space: Any) -> Dict[str, List[str]]:
    """The candidate ops of every DARTS-cell edge of ``space`` (``{'normal/node2/edge0': [...], ...}``)."""
    return {label: list(m.values) for label, m in space.simplify().items() if EDGE_LABEL.match(label)}


def check_space(space: Any, num_ops: Sequence[int], cells: Optional[Sequence[int]]) -> Dict[str, List[str]]:
    """Raise one clear error unless ``space`` can be searched by P-DARTS with ``num_ops`` ops per edge per stage
    and the stage depths ``cells`` (None: the space's own); return its candidates per edge."""
    if is_edge_space(space):
        return _check_edge_space(space, num_ops, cells)
    if not callable(getattr(space, 'recreate', None)):
        raise TypeError(f'{SPACE_REQUIREMENT}; {type(space).__name__} has no recreate method.')
    mutables = space.simplify()
    odd = [label for label in mutables if not (EDGE_LABEL.match(label) or INPUTS_LABEL.match(label))]
    if odd or not any(EDGE_LABEL.match(label) for label in mutables):
        raise TypeError(f'{SPACE_REQUIREMENT}; {type(space).__name__} has the label(s) '
                        f'{odd[:5] or list(mutables)[:5]}.')
    candidates = edge_candidates(space)
    _check_counts(candidates, num_ops, " or change the space's op_candidates")
    return candidates


def _check_edge_space(space: Any, num_ops: Sequence[int], cells: Optional[Sequence[int]]) -> Dict[str, List[str]]:
    name = type(space).__name__
    if cells is not None:
        raise ValueError(f'PDartsStrategy: cells={list(cells)} cannot apply to {name}: it has no DARTS cells '
                         'to deepen, every stage keeps its own depth; pass cells=None (one stage per num_ops).')
    if not callable(getattr(space, 'recreate', None)):
        raise TypeError(f'PDartsStrategy: {EDGE_SPACE_REQUIREMENT}; {name} has no recreate method.')
    edges = {label: list(names) for label, names in space.pdarts_edges().items()}
    mutables = {label: list(m.values) for label, m in space.simplify().items()}
    odd = sorted(set(mutables) - set(edges))
    if odd or not edges or any(mutables.get(label) != names for label, names in edges.items()):
        raise TypeError(f'PDartsStrategy: {EDGE_SPACE_REQUIREMENT}; {name}.pdarts_edges() gives {edges} but its '
                        f'choices are {mutables}.')
    _check_counts(edges, num_ops, '')
    return edges


def _check_counts(candidates: Dict[str, List[str]], num_ops: Sequence[int], remedy: str) -> None:
    counts = sorted({len(names) for names in candidates.values()})
    if counts != [num_ops[0]]:
        raise ValueError(f'PDartsStrategy: num_ops[0]={num_ops[0]} must equal the number of candidate ops '
                         f'on every edge of the space, which has {counts[0] if len(counts) == 1 else counts}; '
                         f'pass num_ops=({", ".join(map(str, [counts[-1], *num_ops[1:]]))}){remedy}.')
