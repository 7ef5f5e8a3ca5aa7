"""Driver of the DDP search tests: ``python tests/_ddp_search.py TRACE.json <search flags>``.

Runs ``run_search`` with :class:`~nni_darts_ext.callbacks.DataParallelSyncCheck` (raises when α/β or the weights
differ between ranks after a step) and, on rank 0, writes the per-step α/β trace to TRACE.json. Lightning's ``ddp``
launcher starts the other ranks by re-running this very command line.
"""
import json
import sys

import torch

torch.set_num_threads(1)

from nni_darts_ext.callbacks import DataParallelSyncCheck  # noqa: E402
from nni_darts_ext.cli import build_parser  # noqa: E402
from nni_darts_ext.oneshot.distributed import is_rank_zero, world_size  # noqa: E402
from nni_darts_ext.search import SearchSettings, run_search  # noqa: E402


def main() -> None:
    trace = sys.argv[1]
    args = build_parser().parse_args(['search', *sys.argv[2:]])
    fields = SearchSettings.__dataclass_fields__
    settings = SearchSettings(**{k: v for k, v in vars(args).items() if k in fields})
    check = DataParallelSyncCheck()
    result = run_search(settings, callbacks=[check])
    if is_rank_zero():
        with open(trace, 'w') as f:
            json.dump({'world_size': world_size(), 'checked_steps': check.checked_steps,
                       'max_weight_diff': check.max_weight_diff, 'history': check.history,
                       'arch': result.arch}, f)


if __name__ == '__main__':
    main()
