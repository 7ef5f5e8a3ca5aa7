"""Known third-party noise, hidden by default: in the CLI (:func:`quiet`, undone by ``--verbose``) and in library use
(:func:`install_library_filters` at package import, :func:`during_search` around our strategies' runs).

Only messages that say nothing about the user's run are hidden, each by its exact text: NNI 3.0 inspecting torch
classes it does not know (the "Buffer" notice), Lightning on newer torch, NNI's note that a one-shot (sequential)
experiment ignores its default training service (printed ~17 times per run), Lightning's accelerator inventory and
advertisements, NNI's note that the data module replaces the evaluator's loaders, and NNI's "Strategy failed to
execute." above the exception that says why. No module of torch, NNI or Lightning is imported here.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Iterator, Tuple

__all__ = ['KNOWN_WARNINGS', 'KNOWN_INFO_LINES', 'quiet', 'install_library_filters', 'during_search',
           'user_stacklevel']

# (message regex, category) of warnings that third-party code prints on every run with this stack and that say
# nothing about the user's run: NNI 3.0 inspecting torch classes it does not know, Lightning on newer torch.
KNOWN_WARNINGS: Tuple[Tuple[str, type], ...] = (
    (r".*is found to be not a nn\.Module, which is unexpected", RuntimeWarning),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    (r".*Running trial code without runtime", RuntimeWarning),
)
# Lightning info lines at the start of every fit (accelerator inventory, advertisements) and NNI's note that our
# data module replaces the evaluator's loaders (printed twice, by NNI's handler and the root one).
KNOWN_INFO_LINES = ('GPU available:', 'TPU available:', 'HPU available:', 'IPU available:', '\U0001f4a1 Tip:',
                    'Fit with datamodule.')
_LIGHTNING_LOGGERS = ('pytorch_lightning.utilities.rank_zero', 'lightning_fabric.utilities.rank_zero',
                      'lightning.pytorch.utilities.rank_zero', 'lightning.fabric.utilities.rank_zero',
                      'nni.nas.evaluator.pytorch.lightning')
# NNI's NasExperimentConfig.default() sets a local training service, then every canonical copy of a one-shot
# (sequential-engine) config warns that it is ignored: nothing a user of NasExperiment(space, evaluator, strategy)
# can change.
_NNI_CONFIG_LOGGER = 'nni.nas.experiment.config.experiment'
_TRAINING_SERVICE_LINE = '`training_service` will be ignored for sequential execution engine.'
# NNI's strategy base logs this at ERROR before re-raising the strategy's exception, which says what failed.
_NNI_STRATEGY_LOGGER = 'nni.nas.strategy.base'
_STRATEGY_FAILED_LINE = 'Strategy failed to execute.'


class _DropLines(logging.Filter):
    def __init__(self, prefixes: Tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


_INFO_FILTER = _DropLines(KNOWN_INFO_LINES)
_TRAINING_SERVICE_FILTER = _DropLines((_TRAINING_SERVICE_LINE,))
_STRATEGY_FAILED_FILTER = _DropLines((_STRATEGY_FAILED_LINE,))


def _warning_filters(enabled: bool) -> None:
    for message, category in KNOWN_WARNINGS:
        if enabled:
            warnings.filterwarnings('ignore', message=message, category=category)
        else:  # drop our entries only
            warnings.filters[:] = [f for f in warnings.filters
                                   if not (f[0] == 'ignore' and f[1] is not None and f[1].pattern == message)]


def quiet(enabled: bool = True) -> None:
    """Hide (``enabled``) the known third-party warnings and info lines (the CLI: before the imports that trigger
    them); ``quiet(False)`` shows them again (``--verbose``), those of library use included."""
    for logger_name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(logger_name)
        (logger.addFilter if enabled else logger.removeFilter)(_INFO_FILTER)
    config_logger = logging.getLogger(_NNI_CONFIG_LOGGER)
    (config_logger.addFilter if enabled else config_logger.removeFilter)(_TRAINING_SERVICE_FILTER)
    _warning_filters(enabled)
    global _LIBRARY_QUIET
    _LIBRARY_QUIET = enabled


_LIBRARY_QUIET = True


def install_library_filters() -> None:
    """At package import: the known warnings and NNI's training-service line (each by its exact text). Lightning's
    inventory lines are only hidden while one of our strategies runs (:func:`during_search`)."""
    _warning_filters(True)
    logging.getLogger(_NNI_CONFIG_LOGGER).addFilter(_TRAINING_SERVICE_FILTER)


@contextlib.contextmanager
def during_search() -> Iterator[None]:
    """While one of our strategies runs: no Lightning inventory / tip lines, no NNI "Strategy failed to execute."
    above the exception (unless ``quiet(False)``)."""
    if not _LIBRARY_QUIET:
        yield
        return
    loggers = [(logging.getLogger(name), _INFO_FILTER) for name in _LIGHTNING_LOGGERS]
    loggers.append((logging.getLogger(_NNI_STRATEGY_LOGGER), _STRATEGY_FAILED_FILTER))
    added = [(logger, f) for logger, f in loggers if f not in logger.filters]
    for logger, f in added:
        logger.addFilter(f)
    try:
        yield
    finally:
        for logger, f in added:
            logger.removeFilter(f)


_INTERNAL = ('nni_darts_ext', 'nni', 'pytorch_lightning', 'lightning', 'lightning_fabric', 'torch', 'contextlib',
             'importlib')


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` called right here that points at the first frame outside this
    package, NNI, Lightning and torch: the user's line (``exp.run()``), not NNI's."""
    frame = sys._getframe(1)  # the caller of user_stacklevel, which calls warnings.warn (stacklevel 1)
    level = 1
    while frame is not None:
        module = frame.f_globals.get('__name__', '') or ''
        if module.split('.')[0] not in _INTERNAL:
            return level
        frame, level = frame.f_back, level + 1
    return 1
