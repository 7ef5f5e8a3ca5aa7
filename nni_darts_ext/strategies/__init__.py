"""NNI strategies: DARTS (first/second order), P-DARTS, PC-DARTS."""
from .darts import DartsStrategy

__all__ = ['DartsStrategy']
