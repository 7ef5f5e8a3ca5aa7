"""nnictl end to end: a real NNI 3.0 experiment whose trials run our one-shot search (docs/nnictl.md).

Each experiment runs in a temporary folder: ``experimentWorkingDirectory`` and ``$HOME`` (so nnictl's manifest
``~/nni-experiments/.experiment`` too) point there; the experiment is stopped in a ``finally`` whatever happens.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _nnictl import (ROOT, TINY_ARGS, Experiment, answers, metric_data, stop_all, tiny_config, trial_dir,
                     wait_done)

EXAMPLES = ('darts', 'pdarts', 'pcdarts')
EPOCHS = 2


@pytest.fixture(scope='module')
def experiments(tmp_path_factory):
    """Both experiments of this module, started at once (they overlap; the second is a single failing trial)."""
    good_tmp, bad_tmp = tmp_path_factory.mktemp('nnictl_good'), tmp_path_factory.mktemp('nnictl_bad')
    good = Experiment(good_tmp, tiny_config(good_tmp, {'seed': [0, 1], 'arc_learning_rate': [0.0003],
                                                   'epochs': [EPOCHS]}, TINY_ARGS, trials=2, concurrency=2))
    bad = Experiment(bad_tmp, tiny_config(bad_tmp, {'pc_k': [4], 'no_such_knob': [1]}, TINY_ARGS, trials=1,
                                      concurrency=1))
    stray = _stray_outputs()
    try:
        for exp in (good, bad):  # one after the other: two managers starting at once are slower to answer
            exp.start()
        yield {'good': good, 'bad': bad, 'stray_before': stray}
    finally:
        stop_all([good, bad])
    for exp in (good, bad):  # stopped: nothing answers on their ports any more
        assert not answers(exp.port), f'experiment {exp.id} still running on port {exp.port}'


def _log_time(log: str, text: str) -> float:
    import datetime
    line = next(line for line in log.splitlines() if text in line)
    return datetime.datetime.strptime(line[1:20], '%Y-%m-%d %H:%M:%S').timestamp()


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
    assert wait_done(exp.port, 150) == 'DONE'
    trials = exp.get('trial-jobs')
    metrics = metric_data(exp.port)
    assert len(trials) == 2, trials
    info = get_info('digits')
    for trial in trials:
        folder = trial_dir(trial)
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
    assert wait_done(exp.port, 120) == 'DONE'
    (trial,) = exp.get('trial-jobs')
    assert trial['status'] == 'FAILED', trial
    assert (trial['endTime'] - trial['startTime']) / 1000 < 240, trial
    folder = trial_dir(trial)
    log = (folder / 'trial.log').read_text()
    message = "bad parameter: unknown search-space parameter 'no_such_knob'"
    assert message in log
    # it fails as soon as it has its parameters (the imports before that take what the machine's load makes them)
    stamps = {key: _log_time(log, key) for key in ('trial failed', 'parameter id')}
    assert stamps['trial failed'] - stamps['parameter id'] < 10, log
    assert message in (folder / 'trial.stderr').read_text()
    assert not [m for m in metric_data(exp.port) if m['trialJobId'] == trial['trialJobId']]
    assert not (folder / 'arch.json').exists()


@pytest.mark.slow
def test_nnictl_from_a_pip_installed_package(tmp_path_factory):
    """The pip user's path (docs/nnictl.md): in a venv the wheel was pip-installed into, ``nnictl --help`` prints no
    warning, ``python -m nni_darts_ext examples --out exp`` writes the shipped YAMLs, and ``nnictl create`` with the
    written pcdarts.yml (tiny preset) runs a trial to SUCCEEDED with that venv's ``python`` and installed package."""
    from _wheel import clean_env, installed_venv
    _, venv = installed_venv(tmp_path_factory)
    tmp = tmp_path_factory.mktemp('nnictl_installed')
    python = venv / 'bin' / 'python'
    # the code of the `nnictl` script NNI installs (its console entry point), run by the venv's python
    nnictl = [str(python), '-c', 'import sys; from nni.tools.nnictl.nnictl import parse_args; sys.exit(parse_args())']
    env = {**clean_env(), 'PATH': os.pathsep.join([str(venv / 'bin'), os.environ.get('PATH', '')])}
    help_ = subprocess.run([*nnictl, '--help'], env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and 'nnictl' in help_.stdout, help_.stderr
    assert 'Warning' not in help_.stderr and 'pkg_resources' not in help_.stderr, help_.stderr
    written = subprocess.run([str(python), '-m', 'nni_darts_ext', 'examples', '--out', 'exp'], env=env, cwd=tmp,
                             capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    assert 'nnictl create --config exp/pcdarts.yml --port 8080' in written.stdout
    path = tmp / 'exp' / 'pcdarts.yml'
    config = yaml.safe_load(path.read_text())
    assert config['trialCodeDirectory'] == '.'  # the written file's folder: no source, the installed package runs
    command = config['trialCommand'].replace('--preset cpu --threads 1', TINY_ARGS)
    assert command.startswith('python -m nni_darts_ext.trial --strategy pcdarts') and '--subset 64' in command
    config.update(experimentName=f'nni_darts_ext installed {tmp.name}',
                  searchSpace={k: {'_type': 'choice', '_value': [v]} for k, v in (('seed', 0), ('k', 2))},
                  trialCommand=command, trialConcurrency=1, maxTrialNumber=1, maxExperimentDuration='10m',
                  maxTrialDuration='5m', experimentWorkingDirectory=str(tmp / 'experiments'))
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    exp = Experiment(tmp, path, nnictl=nnictl, path_first=venv / 'bin')
    try:
        exp.start()
        assert wait_done(exp.port, 300) == 'DONE'
        (trial,) = exp.get('trial-jobs')
        folder = trial_dir(trial)
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
