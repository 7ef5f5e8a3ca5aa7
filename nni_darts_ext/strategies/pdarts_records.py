"""What a P-DARTS search records: one :class:`PDartsStageRecord` per stage (written to ``stages/stage<i>.json`` so
that a resumed search continues after the last finished stage) and the :class:`PDartsResult` of the whole search
(``summary.json``'s ``pdarts``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..space.genotype import Genotype

__all__ = ['PDartsStageRecord', 'PDartsResult']


@dataclass
class PDartsStageRecord:
    """What one stage searched and found."""

    stage: int                           # 1-based
    num_cells: int                       # the requested depth
    supernet_cells: Optional[int]        # the depth of the supernet that was trained (its `cells`)
    num_ops: int
    skip_dropout: float
    epochs: int
    ops: Dict[str, List[str]]            # the candidates every edge searched in this stage
    probs: Dict[str, Dict[str, float]]   # softmax(α) per edge at the end of the stage
    arch: Dict[str, Any]                 # the unrestricted DARTS derivation of this stage
    genotype: Optional[Genotype]
    normal_skips: Optional[int]
    skip_dropout_schedule: List[Tuple[int, float]] = field(default_factory=list)  # (epoch, p) as applied
    kept_ops: Optional[Dict[str, List[str]]] = None  # the ops that go on to the next stage (None after the last)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        result = dataclasses.asdict(self)
        result['genotype'] = None if self.genotype is None else self.genotype._asdict()
        return result

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'PDartsStageRecord':
        """The record of :meth:`to_dict` (read back from a stage file of a resumed search)."""
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if data.get('genotype') is not None:
            data['genotype'] = Genotype(**data['genotype'])
        data['skip_dropout_schedule'] = [tuple(x) for x in data.get('skip_dropout_schedule', [])]
        return cls(**data)


@dataclass
class PDartsResult:
    """The outcome of a P-DARTS search: per-stage records, the final arch (full-depth evaluation space), its genotype,
    and the genotypes for every skip count of the normal cell from the unrestricted one down to 0."""

    stages: List[PDartsStageRecord] = field(default_factory=list)
    arch: Optional[Dict[str, Any]] = None
    genotype: Optional[Genotype] = None
    max_skip: Optional[int] = None
    skip_genotypes: List[Tuple[int, Genotype]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            'stages': [s.to_dict() for s in self.stages],
            'arch': self.arch,
            'genotype': None if self.genotype is None else self.genotype._asdict(),
            'max_skip': self.max_skip,
            'skip_genotypes': [{'skip_connects': k, 'genotype': g._asdict()} for k, g in self.skip_genotypes],
        }
