"""A ground truth for search quality: NNI's NAS-Bench-201 space at a 2-core size, a shipped table of trained cells,
its query API and an NNI evaluator backed by it (``docs/groundtruth.md``)."""

from .space import (EDGES, OPS, NasBench201Grey, all_archs, arch_from_string, arch_to_string, canonical_key,
                    edge_label, validate_arch)
from .table import DEFAULT_TABLE, CellRecord, GroundTruthTable, NotInTableError, TableFormatError

__all__ = ["DEFAULT_TABLE", "EDGES", "OPS", "CellRecord", "GroundTruthTable", "NasBench201Grey", "NotInTableError",
           "TableFormatError", "all_archs", "arch_from_string", "arch_to_string", "canonical_key", "edge_label",
           "validate_arch"]
