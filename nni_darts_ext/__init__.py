"""nni_darts_ext: second-order DARTS, P-DARTS and PC-DARTS as NNI 3.0 strategies on a DARTS cell space."""
from .space.genotype import (DARTS_V1, DARTS_V2, PC_DARTS_CIFAR, PDARTS, Genotype, arch_to_genotype,
                             from_nni_hub_arch, genotype_to_arch, load_arch, save_arch, to_nni_hub_arch)
from .space.network import DartsCellSpace
from .space.ops import OPS
from .strategies.darts import DartsStrategy
from .strategies.pcdarts import PcDartsStrategy
from .strategies.pdarts import PDartsStrategy

__all__ = ['DartsCellSpace', 'Genotype', 'genotype_to_arch', 'arch_to_genotype', 'OPS', 'DARTS_V1', 'DARTS_V2',
           'PDARTS', 'PC_DARTS_CIFAR', 'load_arch', 'save_arch', 'to_nni_hub_arch', 'from_nni_hub_arch', 'DartsStrategy', 'PDartsStrategy', 'PcDartsStrategy']
