"""The bilevel-optimisation primitives under their first import path (kept for existing code).

They live in :mod:`nni_darts_ext.oneshot.hypergradient` (DARTS: first-order and unrolled hypergradients, the virtual
step) and :mod:`nni_darts_ext.oneshot.implicit` (implicit-function hypergradient, TTSA, box projection); every name
this module exported is importable from here as before.
"""
from __future__ import annotations

from .hypergradient import (
    AllReduce,
    LossClosure,
    TensorOrSeq,
    first_order_hypergradient,
    unrolled_hypergradient,
    virtual_step,
)
from .implicit import TTSA, box_projection, implicit_hypergradient

__all__ = [
    "first_order_hypergradient",
    "virtual_step",
    "unrolled_hypergradient",
    "implicit_hypergradient",
    "box_projection",
    "TTSA",
    "LossClosure",
    "AllReduce",
    "TensorOrSeq",
]
