"""What the commands and the nnictl trial share: ``--config``, ``--print-config``, ``--threads``, ``--verbose``."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

from .options import coerce

__all__ = ['add_common_options', 'threads_option', 'set_threads']


def add_common_options(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--print-config``, ``--threads`` and ``--verbose`` (search, train and the trial)."""
    g = p.add_argument_group('run')
    g.add_argument('--config', metavar='FILE.yaml', default=None,
                   help='options from a YAML file (keys: the option names); the command line wins')
    g.add_argument('--print-config', action='store_true',
                   help='print the resolved options as YAML (usable with --config) and exit')
    g.add_argument('--threads', type=int, default=argparse.SUPPRESS,
                   help='torch CPU threads (default: torch\'s choice; on a machine shared with other jobs, 1 can be '
                        'several times faster than oversubscribed cores)')
    g.add_argument('-v', '--verbose', action='store_true', default=argparse.SUPPRESS,
                   help='debug logging and the third-party warnings hidden by default')


def threads_option(args: argparse.Namespace, config: Dict[str, Any]) -> Optional[int]:
    value = getattr(args, 'threads', config.get('threads'))
    return coerce('threads', value, Optional[int])


def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)
