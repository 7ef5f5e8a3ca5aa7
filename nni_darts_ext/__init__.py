"""nni_darts_ext: second-order DARTS, P-DARTS and PC-DARTS as NNI 3.0 strategies on a DARTS cell space.

The public names are imported on first use (PEP 562), so that ``python -m nni_darts_ext --help`` and
``--version`` start without importing torch and NNI.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = '0.2.0'

# Quiet library use: the known third-party warnings and NNI's training-service line, each by its text.
from .quiet import install_library_filters as _install_library_filters  # noqa: E402

_install_library_filters()

_EXPORTS = {
    'space.genotype': ('DARTS_V1', 'DARTS_V2', 'PC_DARTS_CIFAR', 'PDARTS', 'Genotype', 'arch_to_genotype',
                       'genotype_to_arch', 'load_arch', 'save_arch', 'to_nni_hub_arch', 'from_nni_hub_arch'),
    'space.network': ('DartsCellSpace',),
    'space.ops': ('OPS',),
    'strategies.darts': ('DartsStrategy',),
    'strategies.pcdarts': ('PcDartsStrategy',),
    'strategies.pdarts': ('PDartsStrategy',),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ['__version__', *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f'{__name__}.{_WHERE[name]}'), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted({*globals(), *_WHERE})
