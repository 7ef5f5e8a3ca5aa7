"""Moved to :mod:`nni_darts_ext.app.options`; this name is the same module (older imports keep working)."""
import sys

from .app import options as _moved

sys.modules[__name__] = _moved
