"""NNI's NAS-Bench-201 space at a 2-core size, and NAS-Bench-201's isomorphism key.

The space is :class:`nni.nas.hub.pytorch.NasBench201` itself (NNI's cell, NNI's five ops, one cell shared by all
positions); :class:`NasBench201Grey` only swaps the 3-channel stem for a 1-channel one, so grey images need no
channel copies. What differs from NAS-Bench-201 (Dong & Yang, ICLR 2020, Sec. 2.1) is the size: C = 8 instead of 16,
one cell per stage instead of five (``num_modules_per_stack``), 16x16 Fashion-MNIST instead of 32x32 CIFAR-10
(``docs/groundtruth.md`` says why).
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Iterator, List, Mapping

import torch.nn as nn
from nni.nas.hub.pytorch import NasBench201
from nni.nas.hub.pytorch.modules.nasbench201 import NasBench201Cell
from nni.nas.hub.pytorch.nasbench201 import OPS_WITH_STRIDE, PRIMITIVES
from nni.nas.nn.pytorch import LayerChoice

__all__ = [
    "CELL_LABEL", "EDGES", "NB201_OP_NAMES", "OPS", "NasBench201Grey", "all_archs", "arch_from_string",
    "arch_to_string", "build_nb201_op", "canonical_key", "edge_label", "validate_arch",
]

#: NNI's op names, in NNI's order: none, skip_connect, conv_1x1, conv_3x3, avg_pool_3x3.
OPS: tuple[str, ...] = tuple(PRIMITIVES)
#: NAS-Bench-201's spelling of the same ops (``nor_conv_*``), used by its architecture strings.
NB201_OP_NAMES: Dict[str, str] = {"none": "none", "skip_connect": "skip_connect", "conv_1x1": "nor_conv_1x1",
                                  "conv_3x3": "nor_conv_3x3", "avg_pool_3x3": "avg_pool_3x3"}
CELL_LABEL = "cell"
#: The six edges ``(source, target)`` of the 4-node cell, in NAS-Bench-201's string order (by target node).
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def edge_label(source: int, target: int) -> str:
    """NNI's label of an edge: ``cell/0_1`` ... ``cell/2_3``."""
    return f"{CELL_LABEL}/{source}_{target}"


def build_nb201_op(name: str, channels: int, stride: int) -> nn.Module:
    """NNI's NAS-Bench-201 op ``name`` on ``channels`` in and out channels: ``OPS_WITH_STRIDE[name](C, C, stride)``,
    the op NNI's cell builds (the edge-spec builder that PC-DARTS uses to rebuild the candidates on C/K channels)."""
    if name not in OPS_WITH_STRIDE:
        raise ValueError(f"Unknown NAS-Bench-201 op {name!r}. Allowed: {sorted(OPS_WITH_STRIDE)}.")
    return OPS_WITH_STRIDE[name](channels, channels, stride)


class NasBench201Grey(NasBench201):
    """``NasBench201`` with an ``in_channels`` stem (1 for grey images); everything else is NNI's.

    Defaults are the ground-truth table's size: C = 8, one cell per stage (a stem, cell, residual block, cell,
    residual block, cell, then global pooling and the classifier).

    Metadata for the one-shot strategies (NNI's cell and ops are not changed):

    - every edge ``LayerChoice`` carries ``edge_spec = {'channels': C, 'stride': 1, 'build': build_nb201_op}``, so
      that PC-DARTS can rebuild its candidates on C/K channels with NNI's own ops;
    - :meth:`pdarts_edges` and :meth:`recreate` let P-DARTS search it (op pruning per edge, skip-connect dropout and
      the M limit over the six edges; the depth stays the space's own).
    """

    def __init__(self, stem_out_channels: int = 8, num_modules_per_stack: int = 1, num_labels: int = 10,
                 in_channels: int = 1):
        super().__init__(stem_out_channels=stem_out_channels, num_modules_per_stack=num_modules_per_stack,
                         num_labels=num_labels)
        self.in_channels = in_channels
        if in_channels != 3:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_out_channels, kernel_size=3, padding=1, bias=False),
                                      nn.BatchNorm2d(stem_out_channels))
        for cell in self.cells:
            if not isinstance(cell, NasBench201Cell):  # the residual blocks between the stages
                continue
            for node_ops in cell.layers:
                for source, choice in enumerate(node_ops):
                    if isinstance(choice, LayerChoice):  # not in a frozen model (freeze builds the chosen op only)
                        # NNI builds every candidate as OPS_WITH_STRIDE[name](C_in, C_out, 1); the cells of this
                        # space keep their width (C_in == C_out), so C and the builder describe each candidate
                        channels = cell.in_features if source == 0 else cell.out_features
                        if channels != cell.out_features:
                            continue
                        choice.edge_spec = {"channels": channels, "stride": 1, "build": build_nb201_op}

    @property
    def num_cells(self) -> int:
        """The searched cells (three stages of ``num_modules_per_stack``; the residual blocks are not counted)."""
        return 3 * self.num_modules

    def recreate(self, **changes: Any) -> "NasBench201Grey":
        """A new space (fresh weights) with this one's arguments, ``changes`` replacing some of them
        (``stem_out_channels``, ``num_modules_per_stack``, ``num_labels``, ``in_channels``)."""
        arguments = {"stem_out_channels": self.channels, "num_modules_per_stack": self.num_modules,
                     "num_labels": self.num_labels, "in_channels": self.in_channels}
        unknown = sorted(set(changes) - set(arguments))
        if unknown:
            raise TypeError(f"NasBench201Grey.recreate: unknown argument(s) {unknown}; allowed: {sorted(arguments)} "
                            "(the candidates of an edge are pruned in the supernet, not in the space)")
        return type(self)(**{**arguments, **changes})

    def pdarts_edges(self) -> Dict[str, List[str]]:
        """The edges P-DARTS searches, prunes and counts skip-connects on, with their candidates:
        ``{'cell/0_1': ['none', 'skip_connect', 'conv_1x1', 'conv_3x3', 'avg_pool_3x3'], ...}`` (every cell
        position shares them)."""
        return {edge_label(*e): list(OPS) for e in EDGES}


def validate_arch(arch: Mapping[str, str]) -> Dict[str, str]:
    """The arch as a plain dict ``{'cell/0_1': op, ...}``; a missing or unknown label or op raises ``ValueError``
    naming it."""
    labels = [edge_label(*e) for e in EDGES]
    unknown = sorted(set(arch) - set(labels))
    if unknown:
        raise ValueError(f"NAS-Bench-201 arch has unknown label(s) {unknown}; the labels are {labels}")
    missing = [lab for lab in labels if lab not in arch]
    if missing:
        raise ValueError(f"NAS-Bench-201 arch lacks label(s) {missing}: every one of the six edges needs an op")
    bad = {lab: arch[lab] for lab in labels if arch[lab] not in OPS}
    if bad:
        raise ValueError(f"NAS-Bench-201 arch has unknown op(s) {bad}; the ops are {list(OPS)}")
    return {lab: str(arch[lab]) for lab in labels}


def canonical_key(arch: Mapping[str, str]) -> str:
    """The cell's isomorphism class as NAS-Bench-201 counts them (``Structure.to_unique_str(consider_zero=True)``
    of D-X-Y/AutoDL-Projects, re-written here): each node is the sorted ``+``-join of its input terms; ``skip_connect``
    passes its input's expression, a ``none`` edge or an input that is exactly ``#`` (zero) gives the term ``#``, so
    edges out of a dead node drop their op and summands in another order get one key. 15,625 encodings give 6,466
    keys (the paper's count); like the reference, a node whose inputs are all zero is ``#+#``, not ``#``."""
    arch = validate_arch(arch)
    nodes = ["0"]
    for target in range(1, 4):
        terms = []
        for source in range(target):
            op, inp = arch[edge_label(source, target)], nodes[source]
            if op == "none" or inp == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(inp)
            else:
                terms.append(f"({inp})@{op}")
        nodes.append("+".join(sorted(terms)))
    return nodes[3]


def arch_to_string(arch: Mapping[str, str]) -> str:
    """NAS-Bench-201's architecture string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...|``."""
    arch = validate_arch(arch)
    parts = []
    for target in range(1, 4):
        parts.append("|" + "|".join(f"{NB201_OP_NAMES[arch[edge_label(s, target)]]}~{s}" for s in range(target)) + "|")
    return "+".join(parts)


def arch_from_string(text: str) -> Dict[str, str]:
    """The NNI arch dict of a NAS-Bench-201 string (inverse of :func:`arch_to_string`)."""
    names = {v: k for k, v in NB201_OP_NAMES.items()}
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"NAS-Bench-201 string {text!r} must have 3 nodes separated by '+'")
    arch = {}
    for target, node in enumerate(nodes, start=1):
        items = [t for t in node.strip("|").split("|") if t]
        if len(items) != target:
            raise ValueError(f"node {target} of {text!r} must have {target} inputs, got {items}")
        for item in items:
            op, _, source = item.partition("~")
            if op not in names or not source.isdigit():
                raise ValueError(f"{item!r} in {text!r} is not 'op~source' with op in {sorted(names)}")
            arch[edge_label(int(source), target)] = names[op]
    return validate_arch(arch)


def all_archs() -> Iterator[Dict[str, str]]:
    """All 5^6 = 15,625 encodings, in lexicographic order of NNI's op order."""
    labels = [edge_label(*e) for e in EDGES]
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        yield dict(zip(labels, ops))
