"""NNI strategies: DARTS (first/second order), P-DARTS, PC-DARTS."""
from .darts import DartsStrategy
from .pcdarts import PcDartsStrategy
from .pdarts import PDartsStrategy

__all__ = ['DartsStrategy', 'PDartsStrategy', 'PcDartsStrategy']
