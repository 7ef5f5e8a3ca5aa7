"""Moved to :mod:`nni_darts_ext.app.trial`; this name is the same module (older imports keep working), and
``python -m nni_darts_ext.trial`` (the nnictl configs' trial command) still runs a trial."""
import sys

from .app import trial as _moved

if __name__ == '__main__':
    sys.exit(_moved.main())
sys.modules[__name__] = _moved
