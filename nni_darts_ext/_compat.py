"""Names that moved, kept importable from their old module with a ``DeprecationWarning`` (PEP 562 ``__getattr__``)."""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Iterable


def moved_names(old_module: str, new_module: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` under which each of ``names`` of ``old_module`` resolves to ``new_module``'s.

    The new module is imported by name when a moved name is used: the library modules that keep these aliases never
    import the application package (the import contracts in pyproject.toml).
    """
    moved = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in moved:
            warnings.warn(f'{old_module}.{name} moved to {new_module}.{name}', DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(new_module), name)
        raise AttributeError(f'module {old_module!r} has no attribute {name!r}')
    return __getattr__
