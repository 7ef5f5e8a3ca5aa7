"""``python -m nni_darts_ext {search,train,plot,prepare-data}``."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

__all__ = ['main', 'build_parser']

_logger = logging.getLogger('nni_darts_ext')


def _add_search_arguments(p: argparse.ArgumentParser) -> None:
    from .search import PRESETS, STRATEGIES
    p.add_argument('--strategy', choices=STRATEGIES, default='darts')
    p.add_argument('--order', type=int, choices=(1, 2), default=1, help='DARTS order (1: xi = 0; 2: unrolled)')
    p.add_argument('--preset', choices=list(PRESETS), default=None,
                   help='reference: the papers\' settings (GPU scale); cpu: minutes on 2 cores; tiny: seconds')
    p.add_argument('--dataset', default='fashion-mnist', help='fashion-mnist | mnist | cifar10 | digits')
    p.add_argument('--subset', type=int, default=None, help='use a seeded random subset of the training set')
    p.add_argument('--epochs', type=int, default=None, help='search epochs (P-DARTS: per stage)')
    p.add_argument('--batch-size', type=int, default=None)
    p.add_argument('--width', type=int, default=None, help='initial channels C')
    p.add_argument('--cells', type=int, default=None, help='number of cells')
    p.add_argument('--nodes', type=int, default=4)
    p.add_argument('--ops', nargs='+', default=None, help='candidate op names (default: the DARTS eight)')
    p.add_argument('--lr', dest='learning_rate', type=float, default=None, help='weight learning rate')
    p.add_argument('--lr-min', dest='learning_rate_min', type=float, default=None)
    p.add_argument('--arc-lr', dest='arc_learning_rate', type=float, default=None)
    p.add_argument('--warmup-epochs', type=int, default=None,
                   help='weight-only epochs (default: PC-DARTS 15/50, P-DARTS 10/25 of the epochs)')
    p.add_argument('--k', type=int, default=4, help='PC-DARTS partial-channel factor K')
    p.add_argument('--stage-cells', type=int, nargs=3, default=None, help='P-DARTS cells per stage')
    p.add_argument('--stage-ops', type=int, nargs=3, default=(8, 5, 3), help='P-DARTS ops per edge per stage')
    p.add_argument('--skip-dropout', type=float, nargs=3, default=(0.1, 0.4, 0.7))
    p.add_argument('--max-skip', type=int, default=2, help='P-DARTS: skip-connects kept in the normal cell')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--contiguous', dest='channels_last', action='store_false',
                   help='do not use the channels_last memory format')
    p.add_argument('--no-augment', dest='augment', action='store_false',
                   help='no random crop / flip of the search data (the references augment both halves)')
    p.add_argument('--limit-train-batches', type=int, default=None)
    p.add_argument('--data-dir', default=None, help='dataset root (default $NNI_DARTS_EXT_DATA or ~/.cache)')
    p.add_argument('--out', default='runs/search', help='output folder')
    p.add_argument('--no-progress-bar', dest='progress_bar', action='store_false')
    _add_distributed_arguments(p)
    p.add_argument('--retrain-epochs', type=int, default=0,
                   help='train the derived network this many epochs on the training half and report its accuracy '
                        'on the architecture half (the test set is never used); 0: off')


def _add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    """Lightning's Trainer flags for data-parallel runs (issue #13); shared by `search` and `train`."""
    p.add_argument('--accelerator', default=None, help="Lightning accelerator: cpu | gpu | auto (default: Lightning's)")
    p.add_argument('--devices', default=None, help="devices per node: a number (2), a list (0,1) or auto")
    p.add_argument('--num-nodes', type=int, default=1, help='machines (DDP across nodes)')
    p.add_argument('--strategy-backend', default=None,
                   help="Lightning's distributed strategy: ddp | ddp_spawn | ddp_find_unused_parameters_true | ... "
                        "(named so because --strategy is the NAS strategy)")
    p.add_argument('--sync-batchnorm', action='store_true',
                   help='batch-norm statistics over the global batch of all processes (CPU: gloo all-reduce)')


def _run_search(args: argparse.Namespace) -> int:
    from .search import SearchSettings, run_search
    fields = SearchSettings.__dataclass_fields__
    settings = SearchSettings(**{k: v for k, v in vars(args).items() if k in fields})
    result = run_search(settings)
    from .oneshot.distributed import is_rank_zero
    if not is_rank_zero():
        return 0
    print(result.headline())
    print(f'arch: {result.out / "arch.json"}\nsummary: {result.out / "summary.json"}')
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    from .data import prepare_data
    root = prepare_data(root=args.data_dir, names=tuple(args.datasets), download=args.download)
    print(f'datasets {", ".join(args.datasets)} ready in {root}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m nni_darts_ext',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('-v', '--verbose', action='store_true')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('search', help='search an architecture', formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_search_arguments(p)
    p.set_defaults(func=_run_search)
    p = sub.add_parser('prepare-data', help='unpack / install the offline datasets')
    p.add_argument('datasets', nargs='*', default=['fashion-mnist'])
    p.add_argument('--data-dir', default=None)
    p.add_argument('--download', action='store_true', help='allow torchvision downloads (cifar10)')
    p.set_defaults(func=_run_prepare)
    for name, module_name, help_text in (('train', 'retrain', 'retrain an architecture from scratch'),
                                          ('plot', 'viz', 'draw the cells of an arch file or genotype')):
        try:
            module = __import__(f'nni_darts_ext.{module_name}', fromlist=['add_arguments', 'run'])
        except ImportError:
            continue
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='[%(asctime)s] %(levelname)s %(name)s: %(message)s')
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
