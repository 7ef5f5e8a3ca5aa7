"""``python -m nni_darts_ext search``: its options (generated from :class:`~nni_darts_ext.settings.SearchSettings`),
reading them (defaults < ``--config`` file < command line), and running :func:`~nni_darts_ext.search.run_search`."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Tuple

from ..settings import SearchSettings, preset_defaults_help
from .common import set_threads, threads_option
from .options import OptionError, add_options, dump_config, merge, read_config, unknown_keys

__all__ = ['add_arguments', 'search_settings', 'run']


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, SearchSettings, defaults=preset_defaults_help())
    p.add_argument('--resume', action='store_true', default=False,
                   help='continue the search in --out from its checkpoints/last.ckpt')
    p.add_argument('--overwrite', action='store_true',
                   help='delete the run already in --out (results, checkpoints, logs) and start a new one')


def search_settings(args: argparse.Namespace) -> Tuple[Any, Dict[str, Any]]:
    """``(SearchSettings, config-file mapping)`` of parsed ``search`` arguments (defaults < config < CLI)."""
    config = read_config(args.config) if getattr(args, 'config', None) else {}
    unknown = unknown_keys(config, SearchSettings, extra=('threads',))
    if unknown:
        raise OptionError(f'unknown option(s) {unknown} in {args.config}; allowed: the search options '
                          '(python -m nni_darts_ext search --help)')
    return SearchSettings(**merge(SearchSettings, args, config)), config


def run(args: argparse.Namespace) -> int:
    settings, config = search_settings(args)
    threads = threads_option(args, config)
    if args.print_config:
        print(dump_config({**dataclasses.asdict(settings.resolved()), 'threads': threads}), end='')
        return 0
    set_threads(threads)
    from ..search import run_search
    result = run_search(settings, resume=bool(args.resume), overwrite=args.overwrite)
    from ..oneshot.distributed import is_rank_zero
    if not is_rank_zero():
        return 0
    print(result.headline())
    print(f'arch: {result.out / "arch.json"}\nsummary: {result.out / "summary.json"}')
    return 0
