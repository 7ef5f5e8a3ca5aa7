"""One search on 2 CPU processes (Lightning DDP, gloo), for every strategy (docs/distributed.md).

All runs start at once (module fixture), each ``python tests/_ddp_search.py`` under Lightning's ``ddp`` launcher.
The driver's :class:`~nni_darts_ext.callbacks.DataParallelSyncCheck` all-gathers α/β and the weights after every
step and raises when a rank differs (the process then fails), so a zero exit status means bit-identical α, β and
weights on both ranks after every step. Weights identical while the ranks see different shards also shows that
``manual_backward`` all-reduces the weight gradients under NNI's manual optimisation.

With ``--sync-batchnorm`` the 2 x 16 search is the same computation as one process on batch 32, so α agrees to float
summation error (1e-5 after 4 steps) in the runs set up for that comparison (``EXACT``): same seed, no augmentation
(random crops are drawn per process), contiguous tensors (PyTorch's channels_last CPU batch norm is less exact in
float32) and no max pooling (its gradient goes to one of near-equal inputs, which rounding picks differently). Without
it, batch-norm statistics are per rank (16 images instead of 32) and α is another function of the data. See
docs/distributed.md.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ['--preset', 'tiny', '--dataset', 'digits', '--width', '4', '--cells', '3', '--subset', '128',
          '--epochs', '1', '--warmup-epochs', '0', '--limit-train-batches', '2', '--no-progress-bar', '--no-augment',
          '--accelerator', 'cpu']
DDP = ['--batch-size', '16', '--devices', '2', '--strategy-backend', 'ddp']
# the 1e-5 comparison: 4 steps (--epochs 2 overrides COMMON's), contiguous tensors, the DARTS ops less max pooling
EXACT = ['--epochs', '2', '--contiguous', '--ops', 'none', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3',
         'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5']
RUNS = {
    'darts1': ['--strategy', 'darts', '--order', '1', *DDP, *EXACT],
    'darts2': ['--strategy', 'darts', '--order', '2', *DDP],
    'pcdarts': ['--strategy', 'pcdarts', '--k', '2', *DDP],
    'pdarts': ['--strategy', 'pdarts', '--stage-cells', '3', '3', '3', *DDP],
    'darts1_syncbn': ['--strategy', 'darts', '--order', '1', *DDP, *EXACT, '--sync-batchnorm'],
    'darts1_single': ['--strategy', 'darts', '--order', '1', '--batch-size', '32', '--devices', '1', *EXACT],
}
STEPS = {'pdarts': 6, 'darts1': 4}  # P-DARTS: 3 stages x 2 steps; darts1: 2 epochs x 2; the others 2


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp('ddp')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    procs = {}
    for name, flags in RUNS.items():
        out = base / name
        out.mkdir()
        log = open(out / 'log.txt', 'w')
        script = str(ROOT / 'tests' / '_ddp_search.py')
        procs[name] = (subprocess.Popen([sys.executable, script, str(out / 'trace.json'),
                                         *COMMON, *flags, '--out', str(out / 'search')],
                                        cwd=str(out), env=env, stdout=log, stderr=subprocess.STDOUT), log, out)
    results = {}
    for name, (proc, log, out) in procs.items():
        rc = proc.wait(timeout=3600)
        log.close()
        trace = out / 'trace.json'
        results[name] = dict(rc=rc, out=out, log=(out / 'log.txt').read_text()[-3000:],
                             trace=json.loads(trace.read_text()) if trace.is_file() else None)
    return results


def _ok(run):
    assert run['rc'] == 0, run['log']
    return run['trace']


@pytest.mark.parametrize('name', ['darts1', 'darts2', 'pcdarts', 'pdarts'])
def test_ddp_search_keeps_ranks_identical(runs, name):
    trace = _ok(runs[name])
    assert trace['world_size'] == 2
    assert trace['checked_steps'] == STEPS.get(name, 2) == len(trace['history'])
    assert trace['max_weight_diff'] == 0.0
    arch_files = sorted(p.relative_to(runs[name]['out']) for p in runs[name]['out'].rglob('arch.json'))
    assert arch_files == [Path('search/arch.json')]  # rank 1 writes nothing
    assert json.loads((runs[name]['out'] / 'search' / 'arch.json').read_text()) == trace['arch']


def test_ddp_pcdarts_checks_beta_too(runs):
    # PC-DARTS' β (edge normalisation) are architecture parameters: the gathered vector is longer than DARTS' α
    assert len(_ok(runs['pcdarts'])['history'][0]['alphas']) > len(_ok(runs['darts1'])['history'][0]['alphas'])


def _max_diff(a, b):
    assert len(a['history']) == len(b['history'])
    return max(max(abs(x - y) for x, y in zip(sa['alphas'], sb['alphas']))
               for sa, sb in zip(a['history'], b['history']))


def test_sync_batchnorm_matches_one_process_at_the_same_global_batch(runs):
    single, synced, plain = _ok(runs['darts1_single']), _ok(runs['darts1_syncbn']), _ok(runs['darts1'])
    assert single['world_size'] == 1
    diff_sync, diff_plain = _max_diff(single, synced), _max_diff(single, plain)
    print(f'max |Δα| vs one process at batch 32: sync-batchnorm {diff_sync:.3g}, per-rank batch norm {diff_plain:.3g}')
    assert len(single['history']) == 4
    assert diff_sync < 1e-5
    assert diff_plain > max(1e-3, diff_sync)  # per-rank batch statistics: another function of the data
