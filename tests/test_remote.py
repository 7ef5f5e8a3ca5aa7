"""NNI's ``remote`` training service end to end (docs/nnictl.md): examples/remote.yml over SSH to this machine.

A throwaway ``sshd`` (Debian ``openssh-server``; ``scripts/bootstrap.sh`` installs it as root) listens on a free port
of 127.0.0.1 with a throwaway ed25519 key; a 2-trial tiny search made from examples/remote.yml runs through it to
SUCCEEDED. Skipped, with the reason, where sshd is missing or does not start. Its SSH sessions get ``HOME`` in the
temporary folder (NNI's remote folder and the trials' outputs land there) and ``PIP_NO_INDEX=1`` (NNI runs
``pip install nni --upgrade`` on the machine before the first trial; no network needed). Teardown stops the
experiment, then sshd, then any trial keeper NNI left under that ``HOME``.
"""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _nnictl import ROOT, TINY_ARGS, Experiment, free_port, metric_data, tiny_config, wait_done

SSHD = Path('/usr/sbin/sshd')


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(('127.0.0.1', port), timeout=1):
        return True
    return False


def _kill_trial_keepers(home: Path) -> None:
    """NNI starts a trial keeper per remote machine in its own process group; kill any still running."""
    for pid_file in home.glob('nni-experiments/*/environments/*/trial_keeper*/trial_keeper.pid'):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if str(pid_file.parent) in Path(f'/proc/{pid}/cmdline').read_text():  # still that process
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def sshd(tmp_path):
    """An sshd on 127.0.0.1:<free port> that lets the current user in with a key made here."""
    if not SSHD.is_file() or not shutil.which('ssh-keygen'):
        pytest.skip(f'{SSHD} or ssh-keygen missing (Debian: apt-get install -y openssh-server)')
    folder = tmp_path / 'sshd'
    home = tmp_path / 'remote_home'  # the SSH sessions' HOME: NNI's ~/nni-experiments on the "remote" machine
    folder.mkdir()
    home.mkdir()
    key, host_key = folder / 'id_ed25519', folder / 'host_ed25519'
    for path in (key, host_key):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(path)], check=True)
    try:
        Path('/run/sshd').mkdir(exist_ok=True)  # sshd's privilege separation folder
    except OSError as error:
        pytest.skip(f'sshd cannot start: /run/sshd: {error}')
    port = None
    env = {'HOME': str(home), 'PIP_NO_INDEX': '1', 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
    mpl_cache = Path.home() / '.cache' / 'matplotlib'  # no font-cache rebuild per trial
    if mpl_cache.is_dir():
        env['MPLCONFIGDIR'] = str(mpl_cache)
    proc, log = None, folder / 'sshd.log'
    for _ in range(3):  # a free port may be taken before sshd binds it
        port = free_port()
        config = folder / 'sshd_config'
        config.write_text('\n'.join([
            f'Port {port}', 'ListenAddress 127.0.0.1', f'HostKey {host_key}', f'AuthorizedKeysFile {key}.pub',
            f'PidFile {folder / "sshd.pid"}', 'StrictModes no', 'UsePAM no', 'PasswordAuthentication no',
            'PermitRootLogin prohibit-password', 'Subsystem sftp internal-sftp',
            'SetEnv ' + ' '.join(f'{k}="{v}"' for k, v in env.items()), '']))
        with open(log, 'w') as out:
            proc = subprocess.Popen([str(SSHD), '-D', '-e', '-f', str(config)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline and proc.poll() is None and not _port_open(port):
            time.sleep(0.2)
        if proc.poll() is None and _port_open(port):
            break
        proc.kill()
        proc.wait()
        proc = None
    if proc is None:
        pytest.skip(f'sshd cannot start: {log.read_text()[-2000:]}')
    try:
        yield dict(port=port, user=getpass.getuser(), key=key, home=home, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _kill_trial_keepers(home)


def _remote_config(tmp: Path, machine: dict) -> Path:
    """examples/remote.yml with its machine pointed at ``machine`` and the tiny 2-trial search of test_nnictl."""
    example = yaml.safe_load((ROOT / 'examples' / 'remote.yml').read_text())
    service = example['trainingService']
    service['machineList'] = [{**service['machineList'][0], **machine}]
    command = example['trialCommand'].replace('--preset cpu --threads 1', TINY_ARGS)
    assert command.startswith('python -m nni_darts_ext.trial --strategy darts'), command
    return tiny_config(tmp, {'seed': [0, 1], 'epochs': [1]}, TINY_ARGS, trials=2, concurrency=2, example='remote',
                       trialCommand=command, trainingService=service)


@pytest.mark.slow
def test_remote_training_service_runs_two_trials_over_ssh(sshd, tmp_path):
    # pythonPath: this interpreter's bin/ (its environment has the dependencies; the source is the uploaded copy)
    machine = dict(host='127.0.0.1', port=sshd['port'], user=sshd['user'], sshKeyFile=str(sshd['key']),
                   pythonPath=str(Path(sys.executable).parent))
    exp = Experiment(tmp_path, _remote_config(tmp_path, machine))
    try:
        exp.start(first_trial_timeout=120)
        status = wait_done(exp.port, 240)
        trials = exp.get('trial-jobs')
        metrics = metric_data(exp.port)
    finally:
        exp.stop()
    manager_log = next(iter((tmp_path / 'experiments').glob('*/log/nnimanager.log')), None)
    details = f'{trials}\n{manager_log.read_text()[-3000:] if manager_log else ""}\n{sshd["log"].read_text()[-1000:]}'
    assert status == 'DONE', details
    assert len(trials) == 2 and all(t['status'] == 'SUCCEEDED' for t in trials), details
    remote = sshd['home'] / 'nni-experiments' / exp.id / 'environments'
    (code,) = remote.glob('*/upload/trial_code')  # trialCodeDirectory, uploaded over sftp (less .nniignore's paths)
    assert (code / 'nni_darts_ext' / 'trial.py').is_file()
    assert not (code / '.venv').exists() and not (code / '.git').exists(), sorted(p.name for p in code.iterdir())
    seeds = set()
    for trial in trials:
        # the outputs are on the "remote" machine: under the SSH sessions' HOME, not the manager's
        (folder,) = remote.glob(f'*/trials/{trial["trialJobId"]}')
        log = (folder / 'trial.log').read_text()
        final = [m['value'] for m in metrics if m['trialJobId'] == trial['trialJobId'] and m['type'] == 'FINAL']
        assert len(final) == 1 and 0.0 <= final[0]['default'] <= 1.0, (final, log[-2000:])
        summary = json.loads((folder / 'summary.json').read_text())
        assert summary['genotype'] == final[0]['genotype'] and (folder / 'arch.json').is_file()
        seeds.add(summary['settings']['seed'])
        # the trial imported the uploaded copy, not this checkout
        imported = re.search(r'nni_darts_ext \S+ from (\S+)', log)
        assert imported and Path(imported.group(1)).is_relative_to(code), log[:2000]
    assert seeds == {0, 1}


def test_remote_example_is_the_darts_example_on_ssh_machines():
    """examples/remote.yml runs the trials of examples/darts.yml; only how and where differ (fast, no sshd)."""
    from nni_darts_ext.cli import search_settings
    from nni_darts_ext.trial import build_parser, settings_from_params

    remote = yaml.safe_load((ROOT / 'examples' / 'remote.yml').read_text())
    darts = yaml.safe_load((ROOT / 'examples' / 'darts.yml').read_text())
    command = remote['trialCommand'].split()
    assert command[:3] == ['python', '-m', 'nni_darts_ext.trial']  # pythonPath's python, in the uploaded copy
    assert command[3:] == darts['trialCommand'].split()[3:]
    assert remote['trainingService']['platform'] == 'remote' and not remote['trainingService']['reuseMode']
    (machine,) = remote['trainingService']['machineList']
    assert {'host', 'port', 'user', 'sshKeyFile', 'pythonPath'} <= set(machine)
    differ = {k for k in set(remote) | set(darts) if remote.get(k) != darts.get(k)}
    assert differ <= {'experimentName', 'trialCommand', 'trainingService', 'trialGpuNumber'}, differ
    assert remote['trialCodeDirectory'] == '..' and (ROOT / '.nniignore').is_file()
    base, _ = search_settings(build_parser().parse_args(command[3:]))
    for key, spec in remote['searchSpace'].items():
        for value in spec['_value']:
            settings_from_params(base, {key: value})
