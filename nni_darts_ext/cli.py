"""Moved to :mod:`nni_darts_ext.app.cli`; this name is the same module (older imports keep working)."""
import sys

from .app import cli as _moved

sys.modules[__name__] = _moved
