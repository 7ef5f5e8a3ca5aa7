"""Genotypes (the DARTS code's format), the published ones, and conversions to/from NNI arch dicts and JSON files.

Label scheme of :class:`~nni_darts_ext.DartsCellSpace` (arch files depend on it): nodes are numbered as in the
genotype, 0 and 1 are the cell inputs c_{k-2}, c_{k-1}, intermediate nodes are 2 .. num_nodes+1.
``{cell}/node{j}/edge{i}`` is the op on edge i -> j, ``{cell}/node{j}/inputs`` the sorted pair of chosen predecessors.

NNI's hub space (``nni.nas.hub.pytorch.DARTS``, and ``DARTS.load_searched_model``) labels the same choices per node
slot instead of per edge: ``{cell}/op_{j}_{k}`` is the op of the k-th input (k = 0, 1) of node j and
``{cell}/input_{j}_{k}`` its predecessor as a one-element list. :func:`to_nni_hub_arch` / :func:`from_nni_hub_arch`
convert through the genotype; :func:`arch_to_genotype` and :func:`load_arch` accept either format.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import namedtuple
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .ops import NONE_OP, OPS

__all__ = [
    'Genotype', 'DARTS_V1', 'DARTS_V2', 'PDARTS', 'PC_DARTS_CIFAR', 'PUBLISHED_GENOTYPES', 'CELL_TYPES',
    'edge_label', 'inputs_label', 'genotype_to_arch', 'arch_to_genotype', 'save_arch', 'load_arch',
    'ArchFileError', 'genotype_from_name', 'count_skips', 'unused_edge_value', 'arch_format', 'to_nni_hub_arch',
    'from_nni_hub_arch', 'HUB_FORMAT', 'OUR_FORMAT',
]

_logger = logging.getLogger(__name__)

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
CELL_TYPES = ('normal', 'reduce')

# Published genotypes (quark0/darts cnn/genotypes.py; chenxin061/pdarts; yuhuixu1993/PC-DARTS).
DARTS_V1 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0),
            ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])
DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0),
            ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])
PDARTS = Genotype(
    normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)], normal_concat=[2, 3, 4, 5],
    reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0),
            ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=[2, 3, 4, 5])
PC_DARTS_CIFAR = Genotype(
    normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), ('sep_conv_5x5', 0),
            ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=[2, 3, 4, 5],
    reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0),
            ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=[2, 3, 4, 5])
PUBLISHED_GENOTYPES = {'DARTS_V1': DARTS_V1, 'DARTS_V2': DARTS_V2, 'PDARTS': PDARTS, 'PC_DARTS_CIFAR': PC_DARTS_CIFAR}


class ArchFileError(ValueError):
    """An arch dict or arch file that is not a valid architecture of the given space."""


def edge_label(cell: str, node: int, edge: int) -> str:
    return f'{cell}/node{node}/edge{edge}'


def inputs_label(cell: str, node: int) -> str:
    return f'{cell}/node{node}/inputs'


def genotype_from_name(name: str) -> Genotype:
    """A published genotype by name (``DARTS_V2`` ...), case-insensitive."""
    key = name.upper().replace('-', '_')
    if key == 'DARTS':
        key = 'DARTS_V2'
    if key not in PUBLISHED_GENOTYPES:
        raise ValueError(f'Unknown genotype {name!r}. Known: {list(PUBLISHED_GENOTYPES)}.')
    return PUBLISHED_GENOTYPES[key]


def unused_edge_value(candidates: Sequence[str]) -> str:
    """The arch value of an edge its node does not use: ``none``, or the first candidate without ``none``."""
    return NONE_OP if NONE_OP in candidates else candidates[0]


def genotype_to_arch(genotype: Genotype, op_candidates: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The arch dict of :class:`DartsCellSpace` for ``genotype``.

    Edges that their node does not use carry ``none`` (or the first candidate when ``none`` is not one of
    ``op_candidates``); ``inputs`` holds the sorted pair of predecessors.
    """
    candidates = list(op_candidates) if op_candidates is not None else list(OPS)
    arch: Dict[str, Any] = {}
    for cell in CELL_TYPES:
        pairs = getattr(genotype, cell)
        if len(pairs) % 2:
            raise ValueError(f'Genotype.{cell} must hold two (op, input) pairs per node, got {len(pairs)} entries.')
        for step in range(len(pairs) // 2):
            node = step + 2
            chosen = {}
            for op, src in pairs[2 * step: 2 * step + 2]:
                if not 0 <= src < node:
                    raise ValueError(f'Genotype.{cell}: node {node} cannot take input {src}.')
                if src in chosen:
                    raise ValueError(f'Genotype.{cell}: node {node} uses input {src} twice; the NNI space '
                                     'chooses two distinct predecessors per node.')
                chosen[src] = op
            for src in range(node):
                arch[edge_label(cell, node, src)] = chosen.get(src, unused_edge_value(candidates))
            arch[inputs_label(cell, node)] = sorted(chosen)
    return arch


_LABEL = re.compile(r'^(normal|reduce)/node(\d+)/(inputs|edge(\d+))$')
_HUB_LABEL = re.compile(r'^(normal|reduce)/(op|input)_(\d+)_(\d+)$')
OUR_FORMAT = 'nni_darts_ext'  # DartsCellSpace: normal/node2/edge0, normal/node2/inputs
HUB_FORMAT = 'nni_hub'        # nni.nas.hub.pytorch.DARTS: normal/op_2_0, normal/input_2_0
_FORMATS_HELP = ('expected the labels of nni_darts_ext.DartsCellSpace ("normal/node2/edge0", "normal/node2/inputs") '
                 'or of NNI\'s hub DARTS space nni.nas.hub.pytorch.DARTS ("normal/op_2_0", "normal/input_2_0")')


def arch_format(arch: Any) -> str:
    """:data:`OUR_FORMAT` or :data:`HUB_FORMAT` by the arch's labels; ``ArchFileError`` naming both otherwise."""
    if isinstance(arch, dict):
        ours = sum(1 for key in arch if _LABEL.match(str(key)))
        hub = sum(1 for key in arch if _HUB_LABEL.match(str(key)))
        if ours and not hub:
            return OUR_FORMAT
        if hub and not ours:
            return HUB_FORMAT
        if ours and hub:
            raise ArchFileError(f'The arch mixes the two label formats; {_FORMATS_HELP}.')
    keys = list(arch)[:3] if isinstance(arch, dict) else type(arch).__name__
    raise ArchFileError(f'The arch is in no known format (keys {keys}); {_FORMATS_HELP}.')


def _hub_to_genotype(arch: Dict[str, Any]) -> Genotype:
    cells: Dict[str, Any] = {}
    for cell in CELL_TYPES:
        slots = {}
        for key in arch:
            m = _HUB_LABEL.match(str(key))
            if m and m.group(1) == cell:
                slots.setdefault(int(m.group(3)), set()).add(int(m.group(4)))
        pairs: List[tuple] = []
        nodes = sorted(slots)
        if nodes and nodes != list(range(2, nodes[-1] + 1)):
            raise ArchFileError(f'The hub arch\'s {cell} cell has nodes {nodes}; expected 2, 3, ... without gaps.')
        for node in nodes:
            for k in sorted(slots[node]):
                op_key, in_key = f'{cell}/op_{node}_{k}', f'{cell}/input_{node}_{k}'
                for key in (op_key, in_key):
                    if key not in arch:
                        raise ArchFileError(f'The hub arch misses label {key!r}.')
                src = arch[in_key]
                if isinstance(src, (list, tuple)):
                    if len(src) != 1:
                        raise ArchFileError(f'{in_key!r} must choose one input, got {src!r}.')
                    src = src[0]
                pairs.append((arch[op_key], int(src)))
        cells[cell] = pairs
        cells[cell + '_concat'] = list(range(2, nodes[-1] + 1)) if nodes else []
    return Genotype(**cells)


def to_nni_hub_arch(arch: Any) -> Dict[str, Any]:
    """The arch dict of NNI's hub ``nni.nas.hub.pytorch.DARTS`` for a genotype or an arch dict of either format.

    Node j's k-th genotype pair ``(op, i)`` becomes ``{cell}/op_{j}_{k}: op`` and ``{cell}/input_{j}_{k}: [i]``.
    The hub has no ``none`` op (its cell drops unchosen edges itself), so a ``none`` on a chosen edge is an error.
    """
    genotype = arch if isinstance(arch, Genotype) else arch_to_genotype(arch)
    hub: Dict[str, Any] = {}
    for cell in CELL_TYPES:
        pairs = getattr(genotype, cell)
        if len(pairs) % 2:
            raise ValueError(f'Genotype.{cell} must hold two (op, input) pairs per node, got {len(pairs)} entries.')
        for idx, (op, src) in enumerate(pairs):
            node, k = idx // 2 + 2, idx % 2
            if op == NONE_OP:
                raise ArchFileError(f'{cell} node {node} chooses the op {NONE_OP!r} on input {src}; NNI\'s hub space '
                                    'has no such op.')
            hub[f'{cell}/op_{node}_{k}'] = op
            hub[f'{cell}/input_{node}_{k}'] = [int(src)]
    return hub


def from_nni_hub_arch(hub_arch: Dict[str, Any], op_candidates: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The :class:`DartsCellSpace` arch dict of an arch of NNI's hub DARTS space (through the genotype).

    ``op_candidates``: those of the space the arch is meant for (they set the value of unused edges, see
    :func:`genotype_to_arch`). The hub allows one predecessor in both slots of a node; our space does not
    (``InputChoice(n_chosen=2)`` chooses two distinct ones), which raises ``ValueError``.
    """
    if arch_format(hub_arch) != HUB_FORMAT:
        raise ArchFileError(f'from_nni_hub_arch needs an arch of NNI\'s hub DARTS space; {_FORMATS_HELP}.')
    return genotype_to_arch(_hub_to_genotype(hub_arch), op_candidates)


def to_arch_format(arch: Dict[str, Any], fmt: str, op_candidates: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """``arch`` (either format) in format ``fmt`` (:data:`OUR_FORMAT` or :data:`HUB_FORMAT`)."""
    if fmt not in (OUR_FORMAT, HUB_FORMAT):
        raise ValueError(f'format={fmt!r} is invalid; allowed: {OUR_FORMAT!r}, {HUB_FORMAT!r}.')
    if arch_format(arch) == fmt:
        return dict(arch)
    return to_nni_hub_arch(arch) if fmt == HUB_FORMAT else from_nni_hub_arch(arch, op_candidates)


def _num_nodes(arch: Dict[str, Any], cell: str) -> int:
    nodes = [int(m.group(2)) for m in map(_LABEL.match, arch) if m and m.group(1) == cell]
    return max(nodes) - 1 if nodes else 0  # 0: the space has no cell of this type (e.g. 2 cells, both reductions)


def _check_labels(arch: Dict[str, Any]) -> None:
    """Refuse a label of our format that no :class:`DartsCellSpace` has (node < 2, or edge >= node), naming it and,
    when its value is not an op of the registry either, the op."""
    for key, value in arch.items():
        m = _LABEL.match(str(key))
        if m is None:
            continue
        node = int(m.group(2))
        edge = None if m.group(4) is None else int(m.group(4))
        if node >= 2 and (edge is None or edge < node):
            continue
        cell = m.group(1)
        op = ''
        if edge is not None and isinstance(value, str) and value not in OPS:
            op = f'; its op {value!r} is not a known op either (known: {", ".join(OPS)})'
        raise ArchFileError(f'The arch has label {key!r}, which the DARTS cell space does not have: the nodes of a '
                            f'cell are numbered from 2 and node n has the edges 0..n-1 (e.g. {cell}/node2/edge0, '
                            f'{cell}/node2/edge1, {cell}/node2/inputs){op}.')


def arch_to_genotype(arch: Dict[str, Any]) -> Genotype:
    """The genotype of an arch dict of :class:`DartsCellSpace` (inputs in sorted order) or of NNI's hub DARTS space
    (pairs in slot order)."""
    if arch_format(arch) == HUB_FORMAT:
        return _hub_to_genotype(arch)
    _check_labels(arch)
    cells = {}
    for cell in CELL_TYPES:
        num_nodes = _num_nodes(arch, cell)
        pairs: List[tuple] = []
        for node in range(2, num_nodes + 2):
            key = inputs_label(cell, node)
            if key not in arch:
                raise ArchFileError(f'The arch misses label {key!r}.')
            for src in arch[key]:
                op_key = edge_label(cell, node, src)
                if op_key not in arch:
                    raise ArchFileError(f'The arch misses label {op_key!r} (chosen by {key!r}).')
                pairs.append((arch[op_key], int(src)))
        cells[cell] = pairs
        cells[cell + '_concat'] = list(range(2, num_nodes + 2))
    return Genotype(**cells)


def count_skips(genotype: Genotype, cell: str = 'normal') -> int:
    """Number of ``skip_connect`` edges in a cell of the genotype."""
    return sum(op == 'skip_connect' for op, _ in getattr(genotype, cell))


def validate_arch(arch: Dict[str, Any], space_labels: Dict[str, Any], source: str = 'the arch') -> None:
    """Check ``arch`` against the mutables of a space (``space.simplify()``); one error naming the bad key."""
    if not isinstance(arch, dict):
        raise ArchFileError(f'{source} must be a JSON object mapping labels to choices, got {type(arch).__name__}.')
    for label, mutable in space_labels.items():
        if label not in arch:
            raise ArchFileError(f'{source} misses label {label!r}. Export it with '
                                "export_top_models(formatter='dict') or genotype_to_arch().")
        if mutable.check_contains({label: arch[label]}) is not None:
            allowed = list(getattr(mutable, 'values', []))
            raise ArchFileError(f'{source}: label {label!r} has the invalid value {arch[label]!r}; allowed: {allowed}'
                                + (f' (choose {mutable.n_chosen} distinct)' if hasattr(mutable, 'n_chosen') else '')
                                + '.')
    unknown = sorted(set(arch) - set(space_labels))
    if unknown:  # NNI ignores extra keys too (e.g. a genotype's normal cell on a space with only reduction cells)
        _logger.warning('%s has label(s) %s that the space does not define; they are ignored.', source, unknown[:5])


def save_arch(arch: Dict[str, Any], path: os.PathLike | str) -> Path:
    """Write an arch dict as JSON (atomically: a crash never leaves a half-written file)."""
    from ..rundir import atomic_write_text  # a new file's usual mode (0644), unlike tempfile's 0600
    return atomic_write_text(path, json.dumps(arch, indent=2, sort_keys=True))


def load_arch(path: os.PathLike | str, space: Any = None, format: Optional[str] = None) -> Dict[str, Any]:
    """Read an arch JSON file of either format (ours or NNI's hub DARTS space).

    With ``space`` (an NNI ModelSpace) the arch is converted to the space's label format when it is in the other
    one, then every label is checked against the space. ``format`` (:data:`OUR_FORMAT` / :data:`HUB_FORMAT`)
    converts without a space.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchFileError(f'Arch file {str(path)!r} does not exist.')
    try:
        arch = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ArchFileError(f'Arch file {str(path)!r} is not valid JSON ({err}).') from None
    if isinstance(arch, dict) and 'arch' in arch and isinstance(arch['arch'], dict):
        arch = arch['arch']  # a search summary file holds the arch under "arch"
    if format is not None:
        arch = to_arch_format(arch, format)
    if space is not None:
        labels = space.simplify()
        wanted = next((f for f, rx in ((OUR_FORMAT, _LABEL), (HUB_FORMAT, _HUB_LABEL))
                       if any(rx.match(str(k)) for k in labels)), None)
        if wanted is not None and isinstance(arch, dict) and arch_format(arch) != wanted:
            edge = next((m for k, m in labels.items() if _LABEL.match(k) and not k.endswith('/inputs')), None)
            arch = to_arch_format(arch, wanted, list(edge.values) if edge is not None else None)
        validate_arch(arch, labels, source=f'Arch file {str(path)!r}')
    elif not isinstance(arch, dict):
        raise ArchFileError(f'Arch file {str(path)!r} must hold a JSON object mapping labels to choices.')
    return arch


__all__ += ['validate_arch', 'to_arch_format']
