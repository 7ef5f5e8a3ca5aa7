"""``python -m nni_darts_ext {search,train,plot,prepare-data,examples}``.

Startup stays fast: only the chosen command's module is imported (``--help`` and ``--version`` import neither torch
nor NNI). Known third-party warnings and info lines are hidden unless ``--verbose`` (see :func:`quiet`).
``search`` and ``train`` take their options from one dataclass each (:mod:`nni_darts_ext.app.options`), plus
``--config FILE.yaml``, ``--print-config`` and ``--threads``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from .. import __version__

# The known third-party noise and how it is hidden live in quiet.py (library use shares them); kept importable here.
from ..quiet import KNOWN_INFO_LINES, KNOWN_WARNINGS, quiet  # noqa: F401
from .common import add_common_options
from .common import set_threads as _set_threads  # noqa: F401 -- older name, kept importable here
from .common import threads_option as _threads  # noqa: F401 -- older name, kept importable here
from .search_command import search_settings  # noqa: F401 -- kept importable here

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ['main', 'build_parser', 'quiet', 'add_common_options', 'COMMANDS']

_logger = logging.getLogger('nni_darts_ext')


# --- the commands -----------------------------------------------------------------------------------------------------
def _add_search_arguments(p: argparse.ArgumentParser) -> None:
    from .search_command import add_arguments
    add_arguments(p)


def _run_search(args: argparse.Namespace) -> int:
    from .search_command import run
    return run(args)


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .train_command import add_arguments
    add_arguments(p)


def _run_train(args: argparse.Namespace) -> int:
    from .train_command import run
    return run(args)


def _add_plot_arguments(p: argparse.ArgumentParser) -> None:
    from .plot_command import add_arguments
    add_arguments(p)


def _run_plot(args: argparse.Namespace) -> int:
    from .plot_command import run
    return run(args)


def _add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('datasets', nargs='*', default=['fashion-mnist'])
    p.add_argument('--data-dir', default=None)
    p.add_argument('--download', action='store_true', help='allow torchvision downloads (cifar10)')


def _run_prepare(args: argparse.Namespace) -> int:
    from ..data import prepare_data
    root = prepare_data(root=args.data_dir, names=tuple(args.datasets), download=args.download)
    print(f'datasets {", ".join(args.datasets)} ready in {root}')
    return 0


def _add_groundtruth_arguments(p: argparse.ArgumentParser) -> None:
    from .groundtruth_command import add_arguments
    add_arguments(p)


def _run_groundtruth(args: argparse.Namespace) -> int:
    from .groundtruth_command import run
    return run(args)


# --- examples ---------------------------------------------------------------------------------------------------------
#: The nnictl configs shipped inside the package (nni_darts_ext/examples/, package data), for a pip-installed package.
EXAMPLE_CONFIGS = ('darts.yml', 'pdarts.yml', 'pcdarts.yml')


def _add_examples_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out', default='.', help='folder to write the YAMLs into; it must hold no nni_darts_ext source '
                                              '(default: the current folder)')
    p.add_argument('--overwrite', action='store_true', help='replace YAMLs of the same name already there')


def write_examples(out: 'str | os.PathLike[str]', overwrite: bool = False) -> List['Path']:
    """Copy the shipped nnictl configs into ``out`` (created); returns the paths written. An existing file is
    refused (``FileExistsError``) unless ``overwrite``."""
    from importlib.resources import files
    from pathlib import Path
    folder = Path(out)
    if (folder / 'nni_darts_ext').is_dir():
        raise ValueError(f'{folder} holds a nni_darts_ext folder (a checkout?): trials started there would import it '
                         'instead of the installed package; choose another --out')
    targets = [folder / name for name in EXAMPLE_CONFIGS]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f'{", ".join(existing)} already exist(s); pass --overwrite to replace, or choose '
                              'another --out')
    folder.mkdir(parents=True, exist_ok=True)
    shipped = files('nni_darts_ext') / 'examples'
    for target in targets:
        target.write_text(shipped.joinpath(target.name).read_text())
    return targets


def _run_examples(args: argparse.Namespace) -> int:
    written = write_examples(args.out, overwrite=args.overwrite)
    print(f'wrote {len(written)} nnictl configs (each trial is one search, --preset cpu, Fashion-MNIST):')
    for path in written:
        print(f'  {path}')
    print('run one from this environment (its python and nnictl on the PATH), then watch http://localhost:8080:')
    print(f'  nnictl create --config {written[-1]} --port 8080')
    return 0


#: name -> (help, add the options, run, takes --config/--threads)
_Command = Tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], bool]
COMMANDS: Dict[str, _Command] = {
    'search': ('search an architecture', _add_search_arguments, _run_search, True),
    'train': ('retrain an architecture from scratch', _add_train_arguments, _run_train, True),
    'plot': ('draw the cells of an arch file or genotype', _add_plot_arguments, _run_plot, False),
    'prepare-data': ('unpack / install the offline datasets', _add_prepare_arguments, _run_prepare, False),
    'groundtruth': ('the NAS-Bench-201 ground-truth table: build, check, query', _add_groundtruth_arguments,
                    _run_groundtruth, False),
    'examples': ('write the nnictl example configs (YAML) and print the nnictl line to run one',
                 _add_examples_arguments, _run_examples, False),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` only that sub-command's options are built (the others' modules stay unimported);
    ``''`` builds none (for ``--help`` / ``--version``)."""
    parser = argparse.ArgumentParser(prog='python -m nni_darts_ext',
                                     description='DARTS, P-DARTS and PC-DARTS on NNI 3.0: search, retrain, plot.')
    parser.add_argument('--version', action='version', version=f'nni_darts_ext {__version__}')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='debug logging and the third-party warnings hidden by default')
    parser.add_argument('--debug', action='store_true', help='show the Python traceback of an error')
    sub = parser.add_subparsers(dest='command', required=True, metavar='{' + ','.join(COMMANDS) + '}')
    for name, (help_text, add, run, common) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:
            add(p)
            if common:
                add_common_options(p)
        p.set_defaults(func=run)
        # `search ... --debug` as well as `--debug search ...`
        p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS, help='show the traceback of an error')
    return parser


#: Errors of the user's input or environment: one line, exit code 2 (anything else is a bug: exit code 1).
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, PermissionError, NotADirectoryError,
               IsADirectoryError, FileExistsError)


def _command(argv: Sequence[str]) -> str:
    return next((a for a in argv if not a.startswith('-')), '') if argv else ''


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ('-v', '--verbose') for a in argv)
    quiet(not verbose)
    command = _command(argv)
    args = build_parser(command if command in COMMANDS else '').parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format='[%(asctime)s] %(levelname)s %(name)s: %(message)s')
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print('error: interrupted', file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f'error: {err}', file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 -- a bug: one line, the traceback with --debug
        if args.debug:
            raise
        print(f'error: {type(err).__name__}: {err} (run again with --debug for the traceback)', file=sys.stderr)
        return 1
