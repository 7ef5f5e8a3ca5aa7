"""``search --resume`` after a SIGKILL ends bit-identical to an uninterrupted run of the same seed (issue #12).

Each case runs the CLI as a subprocess three times (uninterrupted; killed as soon as its first checkpoint exists;
resumed), 2 batches x 3 epochs of a C=4 supernet on 64 digits, one thread.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def arch_tensors(out: Path) -> dict:
    state = torch.load(out / 'checkpoints' / 'last.ckpt', map_location='cpu', weights_only=False)['state_dict']
    return {k: v for k, v in state.items() if k.endswith(('_arch_alpha', '_arch_beta')) or 'alpha' in k}


@pytest.mark.parametrize('args', [['--order', '2'], ['--strategy', 'pcdarts', '--k', '2']],
                         ids=['darts-order2', 'pcdarts'])
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, args):
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    run(args, straight)
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


def test_pdarts_resumes_mid_stage_and_between_stages(tmp_path):
    """Killed in stage 2 after its first epoch, resumed; killed after stage 2 ended (its record on disk, stage 3 not
    started), resumed: the same genotype and final α as an uninterrupted search."""
    args = ['--strategy', 'pdarts', '--epochs', '2', '--stage-cells', '3', '3', '4']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    run(args, straight)
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
