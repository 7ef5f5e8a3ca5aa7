"""The DARTS cell search space: op registry, cells and network, genotypes."""
from .genotype import *  # noqa: F401,F403
from .genotype import __all__ as _genotype_all
from .network import *  # noqa: F401,F403
from .network import __all__ as _network_all
from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all

__all__ = [*_ops_all, *_genotype_all, *_network_all]
