"""Issue #13: one search on 2 CPU processes (Lightning DDP, gloo), for every strategy.

All runs start at once (module fixture), each ``python tests/_ddp_search.py`` under Lightning's ``ddp`` launcher.
The driver's :class:`~nni_darts_ext.callbacks.DataParallelSyncCheck` all-gathers α/β and the weights after every
step and raises when a rank differs (the process then fails), so a zero exit status means bit-identical α, β and
weights on both ranks after every step. Weights identical while the ranks see different shards also shows that
``manual_backward`` all-reduces the weight gradients under NNI's manual optimisation.

With ``--sync-batchnorm`` the 2 x 16 search is the same computation as one process on batch 32 (same seed, no
augmentation: random crops are drawn per process; ``data.SeededRandomSampler`` gives rank r the images r, r+2, ... of
the one-process order, so the two ranks' batches hold the one-process batch's images), so α agrees to float summation
error. Without it, batch-norm statistics are per rank (16 images instead of 32) and α is a (slightly) different
function of the data. These three runs use DARTS' α lr 3e-4, not the tiny preset's scaled 0.3: Adam moves each α by
about lr·sign(its gradient), which turns float-level differences in a near-cancelling gradient into differences of
order lr (measured at lr 0.3: 6e-8 after step 1, 0.05 after step 2; at 3e-4: 2e-10, 6e-9, 1e-8, 8e-6 over 4 steps,
and 6e-4 to 2e-3 without sync-batchnorm).
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
RUNS = {
    'darts1': ['--strategy', 'darts', '--order', '1', *DDP, '--arc-lr', '3e-4'],
    'darts2': ['--strategy', 'darts', '--order', '2', *DDP],
    'pcdarts': ['--strategy', 'pcdarts', '--k', '2', *DDP],
    'pdarts': ['--strategy', 'pdarts', '--stage-cells', '3', '3', '3', *DDP],
    'darts1_syncbn': ['--strategy', 'darts', '--order', '1', *DDP, '--sync-batchnorm', '--arc-lr', '3e-4'],
    'darts1_single': ['--strategy', 'darts', '--order', '1', '--batch-size', '32', '--devices', '1', '--arc-lr', '3e-4'],
}
STEPS = {'pdarts': 6}  # 3 stages x 2 steps; the others 2


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp('ddp')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    procs = {}
    for name, flags in RUNS.items():
        out = base / name
        out.mkdir()
        log = open(out / 'log.txt', 'w')
        procs[name] = (subprocess.Popen([sys.executable, str(ROOT / 'tests' / '_ddp_search.py'), str(out / 'trace.json'),
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
    assert diff_sync < 1e-5
    assert diff_plain > 10 * diff_sync  # per-rank batch statistics: another function of the data
