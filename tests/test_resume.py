"""``search --resume`` after a SIGKILL ends bit-identical to an uninterrupted run of the same seed
(docs/reliability.md, "Resuming a search").

Each case runs the CLI as a subprocess (uninterrupted; killed; resumed), 2 batches x 3 epochs of a C=4 supernet on
64 digits, one thread. The uninterrupted runs are shared by the tests of this module.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

BASE = ['search', '--preset', 'tiny', '--subset', '64', '--width', '4', '--cells', '3', '--epochs', '3',
        '--limit-train-batches', '2', '--no-progress-bar']


def _cli(args, **kwargs):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(Path(__file__).parents[1])}
    return [sys.executable, '-m', 'nni_darts_ext', *BASE, *args], dict(env=env, **kwargs)


def run_killed(args, out: Path, wait_for: Path, timeout: float = 600) -> None:
    """Start a search and SIGKILL it as soon as ``wait_for`` exists."""
    argv, kwargs = _cli([*args, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(argv, **kwargs)
    deadline = time.time() + timeout
    while not wait_for.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, 'the search ended before it could be killed'


def run(args, out: Path) -> subprocess.CompletedProcess:
    argv, kwargs = _cli([*args, '--out', str(out)], capture_output=True, text=True, timeout=600)
    proc = subprocess.run(argv, **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


_STRAIGHT: Dict[Tuple[str, ...], Tuple[Path, float]] = {}


def straight_run(args, tmp_path_factory) -> Tuple[Path, float]:
    """The folder and wall time of an uninterrupted search with ``args`` (run once per pytest process)."""
    key = tuple(args)
    if key not in _STRAIGHT:
        out = tmp_path_factory.mktemp('straight')
        start = time.time()
        run(args, out)
        _STRAIGHT[key] = out, time.time() - start
    return _STRAIGHT[key]


def assert_same_search(straight: Path, resumed: Path) -> None:
    """The same genotype, arch and final softmax(α) (bit-identical: same machine, CPU)."""
    summary = json.loads((resumed / 'summary.json').read_text())
    assert summary['finished'] and summary['status'] == 'finished'
    expected = json.loads((straight / 'summary.json').read_text())
    assert (resumed / 'genotype.txt').read_text() == (straight / 'genotype.txt').read_text()
    assert json.loads((resumed / 'arch.json').read_text()) == json.loads((straight / 'arch.json').read_text())
    assert summary['probs'] == expected['probs']
    assert [h['epoch'] for h in summary['history']] == [h['epoch'] for h in expected['history']]


def arch_tensors(out: Path) -> dict:
    state = torch.load(out / 'checkpoints' / 'last.ckpt', map_location='cpu', weights_only=False)['state_dict']
    return {k: v for k, v in state.items() if k.endswith(('_arch_alpha', '_arch_beta')) or 'alpha' in k}


@pytest.mark.parametrize('args', [['--order', '2'], ['--strategy', 'pcdarts', '--k', '2']],
                         ids=['darts-order2', 'pcdarts'])
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, tmp_path_factory, args):
    straight, killed = straight_run(args, tmp_path_factory)[0], tmp_path / 'killed'
    run_killed(args, killed, killed / 'checkpoints' / 'last.ckpt')
    interrupted = json.loads((killed / 'summary.json').read_text())
    assert interrupted['finished'] is False and interrupted['status'] == 'running'
    epoch = torch.load(killed / 'checkpoints' / 'last.ckpt', weights_only=False)['epoch']
    assert epoch < 2  # killed before the end

    run([*args, '--resume'], killed)
    summary = json.loads((killed / 'summary.json').read_text())
    assert summary['finished'] and summary['resumed_from'].endswith('last.ckpt')
    assert (killed / 'genotype.txt').read_text() == (straight / 'genotype.txt').read_text()
    assert json.loads((killed / 'arch.json').read_text()) == json.loads((straight / 'arch.json').read_text())
    a, b = arch_tensors(straight), arch_tensors(killed)
    assert a and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-identical (same machine, CPU)
    # the per-epoch history survives the kill
    assert [h['epoch'] for h in summary['history']] == [0, 1, 2]


PDARTS = ['--strategy', 'pdarts', '--epochs', '2', '--stage-cells', '3', '3', '4']


def test_pdarts_resumes_mid_stage_and_between_stages(tmp_path, tmp_path_factory):
    """Killed in stage 2 after its first epoch, resumed; killed after stage 2 ended (its record on disk, stage 3 not
    started), resumed: the same genotype and final α as an uninterrupted search."""
    args = PDARTS
    straight, killed = straight_run(args, tmp_path_factory)[0], tmp_path / 'killed'
    assert sorted(p.name for p in (straight / 'stages').iterdir()) == ['stage1.json', 'stage2.json', 'stage3.json']

    run_killed(args, killed, killed / 'checkpoints' / 'stage2' / 'last.ckpt')  # mid-stage 2
    assert (killed / 'stages' / 'stage1.json').is_file() and not (killed / 'stages' / 'stage2.json').exists()
    run_killed([*args, '--resume'], killed, killed / 'stages' / 'stage2.json')
    if (killed / 'checkpoints' / 'stage3').exists():  # exactly between the stages: stage 3 never checkpointed
        for path in (killed / 'checkpoints' / 'stage3').iterdir():
            path.unlink()
        (killed / 'checkpoints' / 'stage3').rmdir()
    run([*args, '--resume'], killed)

    summary = json.loads((killed / 'summary.json').read_text())
    assert summary['finished'] and summary['resumed_from'].endswith('stage2.json')
    assert (killed / 'genotype.txt').read_text() == (straight / 'genotype.txt').read_text()
    for name in ('stage1.json', 'stage2.json', 'stage3.json'):
        a, b = (json.loads((d / 'stages' / name).read_text()) for d in (straight, killed))
        assert a['probs'] == b['probs'] and a['kept_ops'] == b['kept_ops'], name
    a = torch.load(straight / 'checkpoints' / 'stage3' / 'last.ckpt', weights_only=False)['state_dict']
    b = torch.load(killed / 'checkpoints' / 'stage3' / 'last.ckpt', weights_only=False)['state_dict']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h['epoch'] for h in summary['history']] == [h['epoch'] for h in
                                                         json.loads((straight / 'summary.json').read_text())['history']]


def test_resume_after_a_kill_between_the_epoch_checkpoint_and_last_ckpt(tmp_path, tmp_path_factory):
    """ModelCheckpoint writes ``epoch=0-step=2.ckpt`` and then ``last.ckpt``: a kill between the two leaves the epoch
    file only. ``--resume`` continues from it (the newest checkpoint of the folder), not "nothing to resume"."""
    args = ['--order', '2']
    straight = straight_run(args, tmp_path_factory)[0]
    killed = tmp_path / 'killed'
    checkpoints = killed / 'checkpoints'
    argv, kwargs = _cli([*args, '--out', str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(argv, **kwargs)
    while proc.poll() is None and not list(checkpoints.glob('epoch=*.ckpt')):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, 'the search ended before it could be killed'
    (checkpoints / 'last.ckpt').unlink(missing_ok=True)  # the folder as a kill a moment earlier leaves it
    [epoch_file] = list(checkpoints.glob('epoch=*.ckpt'))

    proc = run([*args, '--resume'], killed)
    summary = json.loads((killed / 'summary.json').read_text())
    assert summary['resumed_from'] == str(epoch_file), proc.stderr[-2000:]
    assert_same_search(straight, killed)


def test_resume_before_the_first_checkpoint_starts_the_run_again(tmp_path, tmp_path_factory):
    """Killed before any checkpoint (only ``summary.json``, status running, and the logs): ``--resume`` says so and
    starts from the beginning; with other settings it is refused as any resume."""
    args = ['--strategy', 'pcdarts', '--k', '2']
    straight = straight_run(args, tmp_path_factory)[0]
    killed = tmp_path / 'killed'
    run_killed(args, killed, killed / 'summary.json')
    if (killed / 'checkpoints').exists():  # the folder as a kill a moment earlier leaves it
        for path in (killed / 'checkpoints').iterdir():
            path.unlink()
    assert json.loads((killed / 'summary.json').read_text())['status'] == 'running'

    argv, kwargs = _cli([*args, '--seed', '1', '--resume', '--out', str(killed)], capture_output=True, text=True,
                        timeout=600)
    refused = subprocess.run(argv, **kwargs)
    assert refused.returncode == 2 and 'seed=0 (now 1)' in refused.stderr, refused.stderr[-2000:]

    proc = run([*args, '--resume'], killed)
    assert 'starting it from the beginning' in proc.stderr
    summary = json.loads((killed / 'summary.json').read_text())
    assert 'resumed_from' not in summary and 'from the beginning' in summary['restarted']
    assert_same_search(straight, killed)


def test_resume_refuses_a_folder_without_a_run(tmp_path):
    argv, kwargs = _cli(['--resume', '--out', str(tmp_path / 'none')], capture_output=True, text=True, timeout=600)
    proc = subprocess.run(argv, **kwargs)
    assert proc.returncode == 2 and 'Nothing to resume' in proc.stderr and 'holds no run' in proc.stderr
    assert not (tmp_path / 'none').exists()


@pytest.mark.parametrize('args', [['--order', '2'], ['--strategy', 'pcdarts', '--k', '2'], PDARTS],
                         ids=['darts-order2', 'pcdarts', 'pdarts'])
def test_kills_spread_over_the_run_resume_to_the_uninterrupted_arch(tmp_path, tmp_path_factory, args):
    """SIGKILL at instants spread over the run (each attempt resumes the previous one and is killed later in its own
    run, measured against the uninterrupted run's wall time T), then a last resume: the same α and arch. Where the
    kills land (startup, before the first checkpoint, mid-epoch, while checkpointing, between P-DARTS stages) depends
    on the machine; every instant must give the uninterrupted result."""
    straight, seconds = straight_run(args, tmp_path_factory)
    killed = tmp_path / 'killed'
    kills = 0
    for fraction in (0.35, 0.6, 0.85, None):
        # killed during the start-up, nothing is written yet: the user runs the command again, without --resume
        resume = ['--resume'] if (killed / 'summary.json').exists() else []
        argv, kwargs = _cli([*args, *resume, '--out', str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
        proc = subprocess.Popen(argv, **kwargs)
        try:
            proc.wait(timeout=None if fraction is None else fraction * seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        err = proc.communicate()[1]
        assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
        if proc.returncode == 0:
            break
    assert kills >= 1
    assert_same_search(straight, killed)


def test_resume_after_the_last_checkpoint_before_the_results(tmp_path, tmp_path_factory):
    """Killed after the last epoch's checkpoint, while the results were being written: the resumed fit runs no batch
    (before the fix NNI's final report raised KeyError 'train_acc') and writes the uninterrupted results."""
    args = ['--order', '2']
    straight = straight_run(args, tmp_path_factory)[0]
    killed = tmp_path / 'killed'
    shutil.copytree(straight, killed)
    for name in ('arch.json', 'genotype.txt', 'summary.txt'):
        (killed / name).unlink()
    summary = json.loads((killed / 'summary.json').read_text())
    (killed / 'summary.json').write_text(json.dumps({k: summary[k] for k in ('finished', 'seed', 'versions',
                                                                             'settings')} | {'status': 'running',
                                                                                             'finished': False}))
    run([*args, '--resume'], killed)
    assert json.loads((killed / 'summary.json').read_text())['resumed_from'].endswith('last.ckpt')
    assert_same_search(straight, killed)


def test_pdarts_resume_after_a_stage_s_last_checkpoint_before_its_record(tmp_path, tmp_path_factory):
    """Killed after stage 2's last checkpoint, before ``stages/stage2.json``: the resumed stage runs no batch, yet its
    data loaders draw from the global random generator; the random state must be the checkpoint's when the stage
    ends, or stage 3's supernet and skip dropout differ (found by the spread kills)."""
    straight = straight_run(PDARTS, tmp_path_factory)[0]
    killed = tmp_path / 'killed'
    shutil.copytree(straight, killed)
    for path in ('stages/stage2.json', 'stages/stage3.json', 'arch.json', 'genotype.txt', 'summary.txt'):
        (killed / path).unlink()
    shutil.rmtree(killed / 'checkpoints' / 'stage3')
    summary = json.loads((killed / 'summary.json').read_text())
    (killed / 'summary.json').write_text(json.dumps({k: summary[k] for k in ('seed', 'versions', 'settings')}
                                                    | {'status': 'running', 'finished': False}))
    run([*PDARTS, '--resume'], killed)
    assert json.loads((killed / 'summary.json').read_text())['resumed_from'].endswith('stage2/last.ckpt')
    for name in ('stage2.json', 'stage3.json'):
        a, b = (json.loads((d / 'stages' / name).read_text()) for d in (straight, killed))
        assert a['rng_state'] == b['rng_state'] and a['probs'] == b['probs'], name
    assert_same_search(straight, killed)
