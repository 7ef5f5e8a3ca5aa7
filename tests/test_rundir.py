"""One run per output folder, atomic result files, clean errors and the divergence guard (docs/reliability.md).

Real tiny searches and trainings through the CLI's ``main``; every refused command must leave the folder as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nni_darts_ext.cli import main
from nni_darts_ext.rundir import AtomicCheckpointIO

# One batch of a C=4, 3-cell supernet on 64 digits: a few seconds per search.
SEARCH = ['search', '--preset', 'tiny', '--subset', '64', '--width', '4', '--cells', '3', '--limit-train-batches', '1',
          '--no-progress-bar']
TRAIN = ['train', '--dataset', 'digits', '--preset', 'tiny', '--width', '4', '--subset', '64',
         '--limit-train-batches', '1', '--test-subset', '32', '--no-plots', '--no-progress-bar']


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its size and modification time."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob('*'))}


@pytest.fixture(scope='module')
def searched(tmp_path_factory):
    """A finished tiny DARTS search (seed 0) in a folder; tests copy it."""
    out = tmp_path_factory.mktemp('searched') / 'run'
    old = os.umask(0o022)
    try:
        assert main([*SEARCH, '--out', str(out)]) == 0
    finally:
        os.umask(old)
    return out


def test_results_are_complete_and_readable(searched):
    summary = json.loads((searched / 'summary.json').read_text())
    assert summary['finished'] is True and summary['status'] == 'finished' and summary['seed'] == 0
    assert set(summary['versions']) >= {'torch', 'nni', 'pytorch_lightning', 'nni_darts_ext'}
    assert summary['versions']['torch'] == torch.__version__.split('+')[0]
    for name in ('arch.json', 'genotype.txt', 'summary.json', 'summary.txt', 'checkpoints/last.ckpt'):
        assert stat.S_IMODE((searched / name).stat().st_mode) == 0o644, name  # not 0600 (mkstemp's mode)
    assert not list(searched.rglob('*.tmp'))
    assert (searched / 'genotype.txt').read_text().strip() == summary['genotype']


def test_a_used_folder_is_refused_then_overwritten(searched, tmp_path, capsys):
    out = tmp_path / 'run'
    shutil.copytree(searched, out)
    (out / 'notes.txt').write_text('mine')  # not a run file: never touched
    before = snapshot(out)
    assert main([*SEARCH, '--out', str(out), '--seed', '1']) == 2
    err = capsys.readouterr().err
    assert str(out) in err and '--resume' in err and '--overwrite' in err and 'Traceback' not in err
    assert snapshot(out) == before

    old_events = {p.name for p in (out / 'logs').rglob('events.*')}
    assert main([*SEARCH, '--out', str(out), '--seed', '1', '--overwrite']) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['seed'] == 1 and summary['finished']
    assert (out / 'notes.txt').read_text() == 'mine'
    assert sorted(p.name for p in (out / 'checkpoints').iterdir()) == ['epoch=0-step=2.ckpt', 'last.ckpt']
    new_events = {p.name for p in (out / 'logs').rglob('events.*')}
    assert len(new_events) == 1 and not new_events & old_events  # the old run's logs are gone, not mixed
    assert torch.load(out / 'checkpoints' / 'last.ckpt', weights_only=False)['callbacks']  # the new run's


def test_resume_refuses_changed_settings_and_corrupt_checkpoints(searched, tmp_path, capsys):
    out = tmp_path / 'run'
    shutil.copytree(searched, out)
    before = snapshot(out)
    assert main([*SEARCH, '--out', str(out), '--resume', '--seed', '3', '--k', '2']) == 2
    err = capsys.readouterr().err
    assert 'seed=0 (now 3)' in err and 'k=4 (now 2)' in err and 'Traceback' not in err
    last = out / 'checkpoints' / 'last.ckpt'
    last.write_bytes(last.read_bytes()[:1000])  # a truncated file
    before = snapshot(out)
    assert main([*SEARCH, '--out', str(out), '--resume']) == 2
    err = capsys.readouterr().err
    assert str(last) in err and '--overwrite' in err and 'Traceback' not in err
    assert snapshot(out) == before
    assert main([*SEARCH, '--out', str(out), '--resume', '--overwrite']) == 2  # contradictory
    assert snapshot(out) == before


def test_refused_train_changes_nothing(tmp_path, capsys):
    out = tmp_path / 'train'
    assert main([*TRAIN, '--genotype', 'DARTS_V1', '--out', str(out)]) == 0
    before = snapshot(out)
    assert main([*TRAIN, '--genotype', 'DARTS_V2', '--out', str(out)]) == 2  # another arch
    assert 'different architecture' in capsys.readouterr().err and snapshot(out) == before
    assert main([*TRAIN, '--genotype', 'DARTS_V1', '--out', str(out), '--no-resume']) == 2
    err = capsys.readouterr().err
    assert '--overwrite' in err and str(out) in err and snapshot(out) == before
    last = out / 'checkpoints' / 'last.ckpt'
    last.write_bytes(b'garbage')
    before = snapshot(out)
    assert main([*TRAIN, '--genotype', 'DARTS_V1', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and '--overwrite' in err and 'Traceback' not in err and snapshot(out) == before
    assert main([*TRAIN, '--genotype', 'DARTS_V2', '--out', str(out), '--overwrite']) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['finished'] and summary['arch_source'] == 'DARTS_V2' and summary['seed'] == 0


def test_killed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    """A process SIGKILLed while it writes ``last.ckpt`` leaves the previous one whole."""
    path = tmp_path / 'last.ckpt'
    AtomicCheckpointIO().save_checkpoint({'state_dict': {'w': torch.ones(3)}, 'epoch': 0}, path)
    code = f'''
import os, signal, torch
from nni_darts_ext.rundir import AtomicCheckpointIO
class Die:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)
AtomicCheckpointIO().save_checkpoint({{'state_dict': {{'w': torch.zeros(100000)}}, 'epoch': 1, 'x': Die()}},
                                     {str(path)!r})
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(path, weights_only=False)
    assert saved['epoch'] == 0 and torch.equal(saved['state_dict']['w'], torch.ones(3))


def _error_cases(tmp: Path):
    afile = tmp / 'afile'
    bad = tmp / 'bad.json'
    return [
        # (argv, exit code, a piece of the message)
        (['prepare-data', 'nosuch', '--data-dir', str(tmp / 'd1')], 2, "Unknown dataset 'nosuch'"),
        (['prepare-data', 'cifar10', '--data-dir', str(tmp / 'd2')], 2, 'CIFAR-10 is not installed'),
        (['plot', str(tmp / 'nosuch.json')], 2, 'neither an arch file nor a published genotype'),
        (['plot', str(bad)], 2, 'not valid JSON'),
        (['plot', 'DARTS_V2', '--out', str(afile)], 2, 'is a file, not a folder'),
        (['plot', 'DARTS_V2', '--out', str(tmp / 'p1'), '--formats', 'nosuchfmt'], 2, 'unknown format'),
        (['train', '--genotype', 'NOPE', '--dataset', 'digits', '--out', str(tmp / 't1')], 2, 'neither an arch'),
        (['train', '--genotype', 'DARTS_V2', '--dataset', 'nosuch', '--out', str(tmp / 't2')], 2, 'Unknown dataset'),
        (['train', '--genotype', 'DARTS_V2', '--dataset', 'digits', '--out', str(afile)], 2, 'is a file, not a folder'),
        (['train', '--genotype', 'DARTS_V2', '--dataset', 'digits', '--epochs', '0', '--out', str(tmp / 't3')], 2,
         'epochs=0 is invalid'),
        (['search', '--dataset', 'nosuch', '--out', str(tmp / 's1')], 2, "Unknown dataset 'nosuch'"),
        (['search', '--preset', 'tiny', '--out', str(afile)], 2, 'is a file, not a folder'),
        (['search', '--preset', 'tiny', '--epochs', '0', '--out', str(tmp / 's2')], 2, 'epochs=0 is invalid'),
        (['search', '--preset', 'tiny', '--dataset', 'cifar10', '--data-dir', str(tmp / 'd3'), '--out',
          str(tmp / 's3')], 2, 'CIFAR-10 is not installed'),
        (['search', '--preset', 'tiny', '--out', str(tmp / 's4'), '--resume'], 2, 'Nothing to resume'),
        (['search', '--preset', 'tiny', '--strategy', 'pcdarts', '--k', '3', '--out', str(tmp / 's5')], 2, 'k'),
        (['search', '--preset', 'tiny', '--strategy', 'pdarts', '--stage-ops', '8', '9', '3', '--out',
          str(tmp / 's6')], 2, 'num_ops'),
    ]


def test_every_error_path_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / 'afile').write_text('x')
    (tmp_path / 'bad.json').write_text('{bad')
    for argv, code, message in _error_cases(tmp_path):
        before = snapshot(tmp_path)
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith('error:')]
        assert len(lines) == 1 and message in lines[0], (argv, err)
        assert 'Traceback' not in err, argv
        assert snapshot(tmp_path) == before, argv  # no new file or folder, nothing changed


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match='is a file, not a folder'):
        (tmp_path / 'afile').write_text('x')
        main(['search', '--preset', 'tiny', '--out', str(tmp_path / 'afile'), '--debug'])


def test_a_diverging_search_fails_with_the_documented_error(tmp_path, capsys, caplog):
    out = tmp_path / 'run'
    assert main([*SEARCH, '--limit-train-batches', '2', '--lr', '1e6', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    # one message: not NNI's "Strategy failed to execute." above ours
    assert not [r for r in caplog.records if 'Strategy failed to execute' in r.getMessage()], caplog.text
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err
    assert 'The search diverged' in lines[0] and 'epoch 0, step' in lines[0] and 'not finite' in lines[0]
    assert 'no good checkpoint' in lines[0] and 'Lower --lr (now 1e+06)' in lines[0]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['finished'] is False and summary['status'] == 'failed' and 'diverged' in summary['error']
    assert not (out / 'arch.json').exists() and not (out / 'checkpoints' / 'last.ckpt').exists()


def test_a_diverging_trial_fails(tmp_path):
    from nni_darts_ext.trial import main as trial_main
    code = trial_main(['--preset', 'tiny', '--subset', '64', '--width', '4', '--cells', '3', '--limit-train-batches',
                       '2', '--lr', '1e6', '--out', str(tmp_path / 'trial')])
    assert code == 2  # nnictl marks a trial with a non-zero exit FAILED, and no FINAL result is sent


def test_guard_names_a_bn_statistic_that_overflows_while_the_loss_is_finite(tmp_path):
    """Inputs of 1e20 overflow BN's running variance (float32) while the normalised loss stays finite."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from nni_darts_ext.guards import DivergenceError, DivergenceGuard

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                            torch.nn.LazyLinear(2))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.body(x * (1e20 if batch_idx == 2 else 1.0)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(32, 1, 6, 6), torch.randint(0, 2, (32,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[DivergenceGuard({'--lr': 0.01})])
    with pytest.raises(DivergenceError) as info:
        trainer.fit(Net(), data)
    message = str(info.value)
    assert 'epoch 0, step 3' in message and 'BatchNorm running statistic body.1.running_var' in message
    assert 'Lower --lr (now 0.01)' in message


def test_run_skeleton_status_and_resume_check(tmp_path):
    """The run skeleton's summary.json goes running -> failed (with the error, the original raised again, or the
    explained one from it) and running -> finished (results, the run's fields, complete or not); a resume with a
    changed setting is refused naming it, a free one is not."""
    from nni_darts_ext.rundir import RunFolderError
    from nni_darts_ext.runner import RunStatus, refuse_changed_settings

    status = RunStatus(tmp_path, seed=3, settings={'lr': 0.1})
    status.running(extra=1)
    saved = json.loads((tmp_path / 'summary.json').read_text())
    assert (saved['status'], saved['seed'], saved['extra'], saved['finished']) == ('running', 3, 1, False)
    assert 'torch' in saved['versions']
    explained = ValueError('the loss diverged: lower --lr')
    with pytest.raises(ValueError, match='diverged') as caught:
        with status.failures(explain=lambda err: explained, describe=str):
            raise FloatingPointError('nan')
    assert caught.value is explained and isinstance(caught.value.__cause__, FloatingPointError)
    saved = json.loads((tmp_path / 'summary.json').read_text())
    assert (saved['status'], saved['error']) == ('failed', 'the loss diverged: lower --lr')
    assert (tmp_path / 'summary.txt').read_text() == 'FAILED: the loss diverged: lower --lr\n'
    with pytest.raises(KeyboardInterrupt):
        with status.failures():
            raise KeyboardInterrupt
    assert json.loads((tmp_path / 'summary.json').read_text())['error'] == 'interrupted'
    status.finished({'acc': 0.5, 'seed': 99}, 'done\n', complete=False, history=[1])
    saved = json.loads((tmp_path / 'summary.json').read_text())
    assert (saved['status'], saved['finished'], saved['acc'], saved['seed'], saved['history']) == \
        ('finished', False, 0.5, 3, [1])
    refuse_changed_settings({'lr': 0.1, 'out': 'a'}, {'lr': 0.1, 'out': 'b'}, ('out',), tmp_path, 'search')
    with pytest.raises(RunFolderError, match=r"lr=0\.1 \(now 0\.2\).*--overwrite to start a new search"):
        refuse_changed_settings({'lr': 0.1}, {'lr': 0.2}, ('out',), tmp_path, 'search')
