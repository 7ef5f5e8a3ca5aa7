"""nnictl end to end: a real NNI 3.0 experiment whose trials run our one-shot search (issue #6).

Each experiment runs in a temporary folder: ``experimentWorkingDirectory`` and ``$HOME`` (so nnictl's manifest
``~/nni-experiments/.experiment`` too) point there; the experiment is stopped in a ``finally`` whatever happens.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
NNICTL = Path(sys.executable).with_name('nnictl')
EXAMPLES = ('darts', 'pdarts', 'pcdarts')
# Seconds per epoch rather than minutes: 8x8 digits, 64 images, C=4, 3 cells, one weight/arch batch per epoch.
TINY_ARGS = ('--preset tiny --subset 64 --width 4 --cells 3 --limit-train-batches 1 --threads 1')
EPOCHS = 2
# NNI gives its manager ~4 s and its tuner process 10 s to start; on a loaded machine they may not make it. When we
# may (root), nnictl and so the manager and tuner run at a raised priority, and the trials drop back to the usual.
BOOST = 10 if hasattr(os, 'geteuid') and os.geteuid() == 0 else 0


def _boost() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - BOOST)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f'http://localhost:{port}/api/v1/nni/{path}', timeout=10) as response:
        return json.loads(response.read().decode())


def _config(tmp: Path, search_space: Dict[str, Any], args: str, trials: int, concurrency: int) -> Path:
    """A tiny config built from examples/darts.yml (its tuner, training service), run in ``tmp``."""
    config = yaml.safe_load((ROOT / 'examples' / 'darts.yml').read_text())
    config.update(
        experimentName=f'nni_darts_ext test {tmp.name}',
        searchSpace={k: {'_type': 'choice', '_value': v} for k, v in search_space.items()},
        # this interpreter, not .venv/bin/python: the test also runs where the venv lives elsewhere
        trialCommand=(f'nice -n {BOOST} ' if BOOST else '')
        + f'{shlex.quote(sys.executable)} -m nni_darts_ext.trial --strategy darts {args}',
        trialCodeDirectory=str(ROOT), trialConcurrency=concurrency, maxTrialNumber=trials,
        maxExperimentDuration='10m', maxTrialDuration='5m',
        experimentWorkingDirectory=str(tmp / 'experiments'))
    path = tmp / 'config.yml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Experiment:
    """One ``nnictl create`` on a free port, with ``$HOME`` (hence nnictl's manifest) and the experiment folder in
    ``tmp``; :meth:`stop` stops it (and kills its manager if ``nnictl stop`` could not)."""

    def __init__(self, tmp: Path, config: Path, nnictl: Optional[List[str]] = None, path_first: Optional[Path] = None):
        self.tmp, self.config = tmp, config
        self.nnictl = nnictl or [str(NNICTL)]
        self.home = tmp / 'home'
        self.home.mkdir(exist_ok=True)
        self.env = {**os.environ, 'HOME': str(self.home), 'PYTHONDONTWRITEBYTECODE': '1', 'PYTHONWARNINGS': 'ignore'}
        for key in [k for k in self.env if k.startswith('NNI_') and k != 'NNI_DARTS_EXT_DATA']:
            self.env.pop(key)
        if path_first is not None:  # an "activated" environment: its bin/ first on the PATH, no checkout on sys.path
            self.env['PATH'] = os.pathsep.join([str(path_first), self.env.get('PATH', '')])
            self.env.pop('PYTHONPATH', None)
        mpl_cache = Path.home() / '.cache' / 'matplotlib'  # the real one: no font-cache rebuild per trial
        if mpl_cache.is_dir():
            self.env.setdefault('MPLCONFIGDIR', str(mpl_cache))
        self.port = _free_port()
        self.id: Optional[str] = None
        self._create: Optional[subprocess.Popen] = None

    def start(self, attempts: int = 4) -> None:
        """``nnictl create``, then wait for the first trial. On a loaded machine NNI's start-up timeouts can fire:
        the manager not answering within nnictl's ~4 s ("Create experiment failed ... Connection refused"), or the
        tuner process not connecting within the manager's 10 s (status ERROR, "Tuner did not connect"). Both are
        retried on a new port after stopping what was started."""
        problem = ''
        for _ in range(attempts):
            problem = self._create_once() or self._wait_first_trial()
            if not problem:
                return
            if 'Create experiment failed' not in problem and 'Tuner did not connect' not in problem:
                break
            self.stop()
            self.id, self.port = None, _free_port()
        pytest.fail(problem)

    def _create_once(self) -> str:
        self._create = subprocess.Popen([*self.nnictl, 'create', '--config', str(self.config), '--port',
                                         str(self.port)], env=self.env, cwd=str(self.tmp),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=_boost if BOOST else None)
        try:
            out, _ = self._create.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self._create.kill()
            out, _ = self._create.communicate()
        found = re.search(r'Experiment ID: (\w+)', re.sub(r'\x1b\[[0-9;]*m', '', out))
        self.id = found.group(1) if found else None
        if self._create.returncode == 0 and self.id:
            assert (self.tmp / 'experiments' / self.id).is_dir(), (self.id, out)
            return ''
        return f'nnictl create failed:\n{out}'

    def _wait_first_trial(self, timeout: float = 60) -> str:
        deadline = time.time() + timeout
        status: Any = None
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError):
                status = self.get('check-status')
                if status['status'] == 'ERROR':
                    return f'experiment {self.id} in ERROR: {status}'
                if self.get('trial-jobs'):
                    return ''
            time.sleep(1)
        return f'experiment {self.id}: no trial after {timeout} s ({status})'

    def get(self, path: str) -> Any:
        return _get(self.port, path)

    def stop(self) -> None:
        self.finish_stop(self.begin_stop())

    def begin_stop(self) -> Optional[subprocess.Popen]:
        if self._create is None:  # never launched
            return None
        if self._create.poll() is None:
            self._create.kill()
            self._create.communicate()
        args = [*self.nnictl, 'stop', self.id] if self.id else [*self.nnictl, 'stop', '--all']
        return subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish_stop(self, proc: Optional[subprocess.Popen]) -> None:
        if proc is None:
            return
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # belt and braces: a manager nnictl could not stop is killed through the pid in the manifest
        manifest = self.home / 'nni-experiments' / '.experiment'
        with contextlib.suppress(OSError, ValueError):
            for exp in json.loads(manifest.read_text()).values():
                if exp.get('pid') and exp.get('port') == self.port and _answers(self.port):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(exp['pid'], 9)
        with contextlib.suppress(OSError):
            manifest.unlink()


def _stop_all(experiments: List[Experiment]) -> None:
    procs = [exp.begin_stop() for exp in experiments]  # side by side: each nnictl takes seconds to start
    for exp, proc in zip(experiments, procs):
        exp.finish_stop(proc)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        _get(port, 'check-status')
        return True
    return False


@pytest.fixture(scope='module')
def experiments(tmp_path_factory):
    """Both experiments of this module, started at once (they overlap; the second is a single failing trial)."""
    good_tmp, bad_tmp = tmp_path_factory.mktemp('nnictl_good'), tmp_path_factory.mktemp('nnictl_bad')
    good = Experiment(good_tmp, _config(good_tmp, {'seed': [0, 1], 'arc_learning_rate': [0.0003],
                                                   'epochs': [EPOCHS]}, TINY_ARGS, trials=2, concurrency=2))
    bad = Experiment(bad_tmp, _config(bad_tmp, {'pc_k': [4], 'no_such_knob': [1]}, TINY_ARGS, trials=1,
                                      concurrency=1))
    stray = _stray_outputs()
    try:
        for exp in (good, bad):  # one after the other: two managers starting at once are slower to answer
            exp.start()
        yield {'good': good, 'bad': bad, 'stray_before': stray}
    finally:
        _stop_all([good, bad])
    for exp in (good, bad):  # stopped: nothing answers on their ports any more
        assert not _answers(exp.port), f'experiment {exp.id} still running on port {exp.port}'


def _wait_done(port: int, timeout: float) -> str:
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status = _get(port, 'check-status')
            if status['status'] in ('DONE', 'ERROR', 'STOPPED'):
                return status['status']
        time.sleep(2)
    trials = _get(port, 'trial-jobs')
    pytest.fail(f'experiment not DONE after {timeout:.0f} s: {status}; trials {trials}')


def _log_time(log: str, text: str) -> float:
    import datetime
    line = next(line for line in log.splitlines() if text in line)
    return datetime.datetime.strptime(line[1:20], '%Y-%m-%d %H:%M:%S').timestamp()


def _trial_dir(trial: Dict[str, Any]) -> Path:
    return Path(trial['logPath'].replace('file://localhost:', ''))


def _metrics(port: int) -> List[Dict[str, Any]]:
    rows = _get(port, 'metric-data')
    for row in rows:
        value = json.loads(row['data'])
        row['value'] = json.loads(value) if isinstance(value, str) else value
    return rows


# What a trial that wrote into its code folder (cwd = trialCodeDirectory = the repository) would leave there.
_STRAY = ('lightning_logs', 'runs/trial', 'logs', 'checkpoints', 'arch.json', 'genotype.txt', 'summary.json',
          'trial.log', 'nni-experiments')


def _stray_outputs() -> set:
    return {name for name in _STRAY if (ROOT / name).exists()}


@pytest.mark.slow
def test_nnictl_experiment_runs_searches_as_trials(experiments):
    from nni_darts_ext import DartsCellSpace, load_arch
    from nni_darts_ext.data import get_info

    exp = experiments['good']
    assert _wait_done(exp.port, 150) == 'DONE'
    trials = exp.get('trial-jobs')
    metrics = _metrics(exp.port)
    assert len(trials) == 2, trials
    info = get_info('digits')
    for trial in trials:
        folder = _trial_dir(trial)
        log = (folder / 'trial.log').read_text() if (folder / 'trial.log').exists() else ''
        assert trial['status'] == 'SUCCEEDED', f'{trial}\n{log[-3000:]}'
        assert folder.is_relative_to(exp.tmp / 'experiments'), folder
        mine = [m for m in metrics if m['trialJobId'] == trial['trialJobId']]
        periodic = sorted((m for m in mine if m['type'] == 'PERIODICAL'), key=lambda m: m['sequence'])
        final = [m for m in mine if m['type'] == 'FINAL']
        assert [m['sequence'] for m in periodic] == list(range(EPOCHS)), mine
        assert all(0.0 <= m['value']['default'] <= 1.0 for m in periodic), periodic
        assert len(final) == 1, mine
        result = final[0]['value']
        assert set(result) == {'default', 'supernet_val_acc', 'genotype', 'params', 'normal_skip_connects'}, result
        assert result['genotype'].startswith('Genotype(normal=[(') and result['params'] > 0
        # the trial ran (and reported under) the parameter set that the web UI lists for it
        listed = json.loads(trial['hyperParameters'][0])
        assert {int(m['parameterId']) for m in mine} == {listed['parameter_id']}, (listed, mine)
        summary = json.loads((folder / 'summary.json').read_text())
        assert summary['settings']['seed'] == listed['parameters']['seed']
        assert summary['settings']['out'] == str(folder)
        assert summary['genotype'] == result['genotype']
        assert (folder / 'genotype.txt').read_text().strip() == result['genotype']
        assert list((folder / 'logs').rglob('events.out.tfevents.*')), 'no TensorBoard events'
        assert list((folder / 'checkpoints').glob('*.ckpt')), 'no checkpoint'
        arch = load_arch(folder / 'arch.json')
        space = DartsCellSpace(width=4, num_cells=3, in_channels=info.in_channels, image_size=info.image_size,
                               num_classes=info.num_classes)
        model = space.freeze(arch)
        assert model(torch.zeros(2, info.in_channels, info.image_size, info.image_size)).shape == (2, 10)
        assert sum(p.numel() for p in model.parameters()) == result['params']
    assert {json.loads(t['hyperParameters'][0])['parameters']['seed'] for t in trials} == {0, 1}
    assert _stray_outputs() == experiments['stray_before'], 'a trial wrote into the repository'


@pytest.mark.slow
def test_nnictl_bad_parameter_fails_the_trial_with_its_reason(experiments):
    exp = experiments['bad']
    assert _wait_done(exp.port, 120) == 'DONE'
    (trial,) = exp.get('trial-jobs')
    assert trial['status'] == 'FAILED', trial
    assert (trial['endTime'] - trial['startTime']) / 1000 < 240, trial
    folder = _trial_dir(trial)
    log = (folder / 'trial.log').read_text()
    message = "bad parameter: unknown search-space parameter 'no_such_knob'"
    assert message in log
    # it fails as soon as it has its parameters (the imports before that take what the machine's load makes them)
    stamps = {key: _log_time(log, key) for key in ('trial failed', 'parameter id')}
    assert stamps['trial failed'] - stamps['parameter id'] < 10, log
    assert message in (folder / 'trial.stderr').read_text()
    assert not [m for m in _metrics(exp.port) if m['trialJobId'] == trial['trialJobId']]
    assert not (folder / 'arch.json').exists()


@pytest.mark.slow
def test_nnictl_from_a_pip_installed_package(tmp_path_factory):
    """examples/installed/darts.yml run by the nnictl of a venv the wheel was pip-installed into: the trial runs
    that venv's ``python`` and imports the installed package, although its code folder lies inside this checkout."""
    from _wheel import installed_venv
    _, venv = installed_venv(tmp_path_factory)
    tmp = tmp_path_factory.mktemp('nnictl_installed')
    config = yaml.safe_load((ROOT / 'examples' / 'installed' / 'darts.yml').read_text())
    command = config['trialCommand'].replace('--preset cpu --threads 1', TINY_ARGS)
    assert command.startswith('python -m nni_darts_ext.trial --strategy darts') and '--subset 64' in command
    config.update(experimentName=f'nni_darts_ext installed {tmp.name}',
                  searchSpace={k: {'_type': 'choice', '_value': [v]} for k, v in (('seed', 0), ('epochs', 1))},
                  trialCommand=command, trialCodeDirectory=str(ROOT / 'examples' / 'installed'),
                  trialConcurrency=1, maxTrialNumber=1, maxExperimentDuration='10m', maxTrialDuration='5m',
                  experimentWorkingDirectory=str(tmp / 'experiments'))
    path = tmp / 'config.yml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    python = venv / 'bin' / 'python'
    exp = Experiment(tmp, path, nnictl=[str(python), '-c', 'from nni.tools.nnictl.nnictl import parse_args; '
                                                            'parse_args()'], path_first=venv / 'bin')
    try:
        exp.start()
        assert _wait_done(exp.port, 300) == 'DONE'
        (trial,) = exp.get('trial-jobs')
        folder = _trial_dir(trial)
        log = (folder / 'trial.log').read_text() if (folder / 'trial.log').exists() else ''
        assert trial['status'] == 'SUCCEEDED', f'{trial}\n{log[-3000:]}'
    finally:
        exp.stop()
    imported = re.search(r'nni_darts_ext \S+ from (\S+)', log)
    assert imported and Path(imported.group(1)).is_relative_to(venv), log[:2000]
    assert (folder / 'arch.json').is_file()


# --- fast checks (no nnictl) ------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['checkout', 'installed'])
@pytest.mark.parametrize('name', EXAMPLES)
def test_example_configs_are_valid_nnictl_configs(name, kind):
    from nni.experiment.config import ExperimentConfig
    from nni_darts_ext.cli import search_settings
    from nni_darts_ext.trial import build_parser, settings_from_params

    path = ROOT / 'examples' / ('installed' if kind == 'installed' else '') / f'{name}.yml'
    config = ExperimentConfig.load(str(path))
    raw = yaml.safe_load(path.read_text())
    command = shlex.split(raw['trialCommand'])
    code_dir = (path.parent / config.trial_code_directory).resolve()
    if kind == 'checkout':  # the project's .venv, run in the repository
        assert raw['trialCodeDirectory'] == '..' and code_dir == ROOT
        assert command[:3] == ['.venv/bin/python', '-m', 'nni_darts_ext.trial'], command
    else:  # the python on the PATH, in a folder without source: the installed package is imported, not a checkout
        assert command[:3] == ['python', '-m', 'nni_darts_ext.trial'], command
        assert not (code_dir / 'nni_darts_ext').exists() and not list(code_dir.glob('*.py'))
        assert code_dir != ROOT
    base, _ = search_settings(build_parser().parse_args(command[3:]))
    assert base.strategy == name and base.preset == 'cpu' and base.resolved().dataset == 'fashion-mnist'
    space = raw['searchSpace']
    assert space and all(spec['_type'] == 'choice' for spec in space.values())
    for key, spec in space.items():  # every value of every key is a setting the trial accepts
        for value in spec['_value']:
            settings_from_params(base, {key: value})
    assert raw['tuner']['name'] in ('GridSearch', 'Random', 'TPE')
    assert config.trial_concurrency >= 1 and config.max_trial_number >= 1


def test_installed_and_checkout_configs_differ_only_in_how_they_run():
    for name in EXAMPLES:
        checkout = yaml.safe_load((ROOT / 'examples' / f'{name}.yml').read_text())
        installed = yaml.safe_load((ROOT / 'examples' / 'installed' / f'{name}.yml').read_text())
        for key in ('trialCommand', 'trialCodeDirectory'):
            checkout.pop(key), installed.pop(key)
        assert checkout == installed


def test_settings_from_params_merges_and_validates():
    from nni_darts_ext.search import SearchSettings
    from nni_darts_ext.trial import settings_from_params

    base = SearchSettings(strategy='pcdarts', preset='tiny')
    s = settings_from_params(base, {'pc_k': 2.0, 'arc_lr': '6e-4', 'seed': 3, 'stage-cells': [2, 3, 4],
                                    'learning_rate': 0.05, 'dataset': 'digits'})
    assert (s.k, s.arc_learning_rate, s.seed, s.stage_cells, s.learning_rate) == (2, 6e-4, 3, (2, 3, 4), 0.05)
    assert isinstance(s.k, int)
    for params, message in (({'no_such_knob': 1}, 'unknown search-space parameter'),
                            ({'k': 2.5}, "parameter 'k'"), ({'seed': True}, "parameter 'seed'"),
                            ({'out': '/tmp'}, 'NNI_OUTPUT_DIR'), ({'k': 2, 'pc_k': 4}, 'both set'),
                            ({'dataset': 'imagenet'}, 'dataset'), ({'strategy': 'enas'}, 'strategy'),
                            ({'epochs': 0}, 'epochs')):
        with pytest.raises(ValueError, match=message):
            settings_from_params(base, params)


def test_trial_outside_nnictl_fails_fast_on_a_bad_parameter(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('NNI_')}
    proc = subprocess.run([sys.executable, '-m', 'nni_darts_ext.trial', '--preset', 'tiny', '--out',
                           str(tmp_path / 'out'), '--params', '{"warmup_epochs": 5}'], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'trial failed: bad parameter: warmup_epochs=5' in proc.stderr
    assert not (tmp_path / 'out').exists()


def test_gpu_example_is_a_valid_reference_config():
    # examples/pcdarts_gpu.yml cannot run here (no GPU): NNI accepts it, it asks one GPU per trial, and the trial
    # accepts its command line and every search-space value, at the papers' setting
    from nni.experiment.config import ExperimentConfig
    from nni_darts_ext.cli import search_settings
    from nni_darts_ext.trial import build_parser, settings_from_params

    path = ROOT / 'examples' / 'pcdarts_gpu.yml'
    config = ExperimentConfig.load(str(path))
    raw = yaml.safe_load(path.read_text())
    assert config.trial_gpu_number == 1 and config.training_service.max_trial_number_per_gpu == 1
    base, _ = search_settings(build_parser().parse_args(shlex.split(raw['trialCommand'])[3:]))
    assert (base.strategy, base.preset, base.accelerator) == ('pcdarts', 'reference', 'gpu')
    for key, spec in raw['searchSpace'].items():
        for value in spec['_value']:
            settings_from_params(base, {key: value})
    resolved = settings_from_params(base, {'dataset': 'cifar10'}).resolved()
    assert (resolved.width, resolved.cells, resolved.batch_size, resolved.epochs, resolved.k) == (16, 8, 256, 50, 4)
