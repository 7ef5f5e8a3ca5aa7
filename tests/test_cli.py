"""The command line: fast and quiet start, options generated from the settings dataclasses,
``--config`` / ``--print-config``, every older flag, an explicit ``--dataset`` over a preset, plain logs off a tty."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_darts_ext import __version__
from nni_darts_ext.cli import build_parser, main, search_settings
from nni_darts_ext.search import SearchSettings

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_and_version_import_neither_torch_nor_nni(tmp_path):
    code = ('import sys, contextlib, io\n'
            'from nni_darts_ext.cli import main\n'
            'for argv in (["--help"], ["--version"]):\n'
            '    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n'
            '        main(argv)\n'
            'print(sorted(m for m in ("torch", "nni", "pytorch_lightning") if m in sys.modules))\n')
    proc = run_module('-c', code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]'
    proc = run_module('-m', 'nni_darts_ext', '--version', cwd=tmp_path)
    assert proc.stdout.strip() == f'nni_darts_ext {__version__}' and not proc.stderr


def parse_search(argv):
    return search_settings(build_parser('search').parse_args(['search', *argv]))[0]


# the fields (and flags) that scripts and YAMLs written before the generated CLI use
OLDER_FIELDS = ('strategy', 'order', 'dataset', 'preset', 'subset', 'epochs', 'batch_size', 'width', 'cells', 'nodes',
                'ops', 'learning_rate', 'learning_rate_min', 'arc_learning_rate', 'warmup_epochs', 'k', 'stage_cells',
                'stage_ops', 'skip_dropout', 'max_skip', 'seed', 'channels_last', 'limit_train_batches', 'num_workers',
                'data_dir', 'out', 'progress_bar')


def test_every_older_search_flag_still_works():
    s = parse_search(['--strategy', 'pcdarts', '--order', '2', '--preset', 'cpu', '--epochs', '3', '--seed', '5',
                      '--k', '2', '--lr', '0.1', '--lr-min', '0.01', '--arc-lr', '6e-4', '--dataset', 'mnist',
                      '--out', 'x', '--subset', '10', '--batch-size', '8', '--width', '4', '--cells', '5',
                      '--nodes', '3', '--ops', 'skip_connect', 'max_pool_3x3', '--warmup-epochs', '1',
                      '--stage-cells', '2', '3', '4', '--stage-ops', '4', '3', '2', '--skip-dropout', '0', '0.1',
                      '0.2', '--max-skip', '1', '--contiguous', '--limit-train-batches', '2', '--data-dir', 'd',
                      '--no-progress-bar', '--num-workers', '1'])
    assert {k: v for k, v in dataclasses.asdict(s).items() if k in OLDER_FIELDS} == dict(
        strategy='pcdarts', order=2, dataset='mnist', preset='cpu', subset=10, epochs=3, batch_size=8, width=4,
        cells=5, nodes=3, ops=['skip_connect', 'max_pool_3x3'], learning_rate=0.1, learning_rate_min=0.01,
        arc_learning_rate=6e-4, warmup_epochs=1, k=2, stage_cells=[2, 3, 4], stage_ops=[4, 3, 2],
        skip_dropout=[0.0, 0.1, 0.2], max_skip=1, seed=5, channels_last=False, limit_train_batches=2, num_workers=1,
        data_dir='d', out='x', progress_bar=False)
    assert parse_search([]) == SearchSettings()  # nothing given: the dataclass defaults


def test_every_dataclass_field_is_an_option():
    from nni_darts_ext.app.train_command import TrainCommand
    from nni_darts_ext.settings import RetrainSettings
    for command, classes in (('search', [SearchSettings]), ('train', [TrainCommand, RetrainSettings])):
        parser = build_parser(command)
        sub = parser._subparsers._group_actions[0].choices[command]
        dests = {a.dest for a in sub._actions}
        for cls in classes:
            assert {f.name for f in dataclasses.fields(cls)} <= dests
        assert {'config', 'print_config', 'threads', 'verbose'} <= dests


def test_explicit_dataset_wins_over_the_preset():
    assert SearchSettings(preset='tiny').resolved().dataset == 'digits'
    assert SearchSettings(dataset='fashion-mnist', preset='tiny').resolved().dataset == 'fashion-mnist'
    assert parse_search(['--dataset', 'fashion-mnist', '--preset', 'tiny']).resolved().dataset == 'fashion-mnist'
    assert SearchSettings().resolved().dataset == 'cifar10'  # the reference preset: the papers' data


def test_config_file_then_command_line_and_print_config_round_trip(tmp_path, capsys):
    config = tmp_path / 'search.yaml'
    config.write_text(yaml.safe_dump({'strategy': 'pcdarts', 'lr': 0.05, 'k': 2, 'stage-cells': [2, 3, 4],
                                      'preset': 'tiny', 'threads': 1}))
    assert main(['search', '--config', str(config), '--k', '3', '--print-config']) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed['strategy'], printed['learning_rate'], printed['k'], printed['stage_cells']) == (
        'pcdarts', 0.05, 3, [2, 3, 4])
    assert printed['dataset'] == 'digits' and printed['threads'] == 1  # from the preset, from the file
    again = tmp_path / 'printed.yaml'
    again.write_text(yaml.safe_dump(printed))
    assert main(['search', '--config', str(again), '--print-config']) == 0
    assert yaml.safe_load(capsys.readouterr().out) == printed


def test_bad_config_files_fail_with_their_reason(tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('no_such_knob: 1\n')
    assert main(['search', '--config', str(bad), '--print-config']) == 2
    assert "unknown option(s) ['no_such_knob']" in capsys.readouterr().err
    bad.write_text('k: two\n')
    assert main(['search', '--config', str(bad), '--print-config']) == 2
    assert "parameter 'k'" in capsys.readouterr().err
    assert main(['search', '--config', str(tmp_path / 'none.yaml')]) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_train_options_config_and_print_config(tmp_path, capsys):
    config = tmp_path / 'train.yaml'
    config.write_text('genotype: PDARTS\ndataset: digits\npreset: tiny\nlr: 0.1\ncutout: 4\n')
    assert main(['train', '--config', str(config), '--epochs', '3', '--grad-clip', '2', '--contiguous',
                 '--no-augment', '--num-workers', '1', '--threads', '1', '--print-config']) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed['genotype'] == 'PDARTS' and printed['dataset'] == 'digits'
    assert (printed['epochs'], printed['width'], printed['learning_rate'], printed['cutout']) == (3, 8, 0.1, 4)
    assert (printed['gradient_clip_val'], printed['channels_last'], printed['augment'], printed['num_workers'],
            printed['threads']) == (2.0, False, False, 1, 1)
    assert main(['train', '--dataset', 'digits', '--print-config']) == 2
    assert 'exactly one of --arch FILE and --genotype NAME' in capsys.readouterr().err


@pytest.mark.slow
def test_quiet_by_default_plain_epoch_lines_off_a_terminal_and_verbose(tmp_path):
    args = ['-m', 'nni_darts_ext', 'train', '--genotype', 'DARTS_V2', '--dataset', 'digits', '--preset', 'tiny',
            '--width', '4', '--subset', '64', '--limit-train-batches', '1', '--test-subset', '32', '--epochs', '2',
            '--threads', '1', '--no-plots']
    quiet = run_module(*args, '--out', str(tmp_path / 'q'), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    for noise in ('is found to be not a nn.Module', 'LeafSpec', 'GPU available', 'TPU available', 'Tip:', '\r',
                  '\x1b['):
        assert noise not in quiet.stderr + quiet.stdout, noise
    assert 'epoch 1/2' in quiet.stderr and 'epoch 2/2' in quiet.stderr and 'train_loss' in quiet.stderr
    loud = run_module(*args, '--out', str(tmp_path / 'v'), '--verbose', cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert 'is found to be not a nn.Module' in loud.stderr and 'GPU available' in loud.stderr


def test_examples_writes_the_shipped_nnictl_configs_and_the_line_to_run(tmp_path, capsys):
    out = tmp_path / 'exp'
    assert main(['examples', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ('darts', 'pdarts', 'pcdarts'):  # the same files as examples/installed/ of a checkout
        assert (out / f'{name}.yml').read_text() == (ROOT / 'examples' / 'installed' / f'{name}.yml').read_text()
        assert str(out / f'{name}.yml') in printed
    assert f'nnictl create --config {out / "pcdarts.yml"} --port 8080' in printed
    # a second run does not overwrite silently; --overwrite does
    assert main(['examples', '--out', str(out)]) == 2
    assert 'already exist(s); pass --overwrite to replace' in capsys.readouterr().err
    assert main(['examples', '--out', str(out), '--overwrite']) == 0
    # a checkout's root would make the trials import the checkout
    assert main(['examples', '--out', str(ROOT)]) == 2
    assert 'holds a nni_darts_ext folder (a checkout?)' in capsys.readouterr().err


def test_help_and_first_log_line_say_what_each_preset_costs(capsys):
    """--help gives every preset's expected wall time (2 CPU cores, one GPU); the default, reference, says
    at start that it is the GPU-scale setting."""
    from nni_darts_ext.search import PRESET_COST, preset_cost_line
    for command in ('search', 'train'):
        with pytest.raises(SystemExit):
            main([command, '--help'])
        text = ' '.join(capsys.readouterr().out.split())
        assert 'Expected wall time: reference: about ' in text
        for preset, cost in PRESET_COST[command].items():
            assert f'{preset}: {cost}' in text
    assert 'one GPU' in PRESET_COST['search']['reference'] and 'H200' in PRESET_COST['train']['reference']
    assert preset_cost_line('search', None) == (
        f"preset reference: {PRESET_COST['search']['reference']}; this is the papers' GPU-scale setting (the "
        'default): --preset cpu runs in minutes on a CPU, --preset tiny in seconds')
    assert preset_cost_line('train', 'small').startswith('preset cpu: about 5 min on 2 idle CPU cores')


def test_num_cells_spellings_reach_the_same_setting(tmp_path):
    """``num_cells`` (DartsCellSpace's name) and the older ``cells`` / ``layers`` set one field, on the command line,
    in a config file and as an nnictl parameter; ``--num-cell-nodes`` is ``--nodes``."""
    from nni_darts_ext.app.train_command import train_settings
    from nni_darts_ext.trial import settings_from_params
    assert parse_search(['--num-cells', '4']).cells == parse_search(['--cells', '4']).cells == 4
    assert parse_search(['--layers', '6', '--num-cell-nodes', '3']).nodes == 3
    config = tmp_path / 'search.yaml'
    config.write_text(yaml.safe_dump({'num_cells': 7}))
    assert parse_search(['--config', str(config)]).cells == 7
    assert settings_from_params(SearchSettings(preset='tiny'), {'num_cells': 2}).cells == 2
    _, recipe, _ = train_settings(build_parser().parse_args(['train', '--genotype', 'DARTS_V2', '--num-cells', '5']))
    assert recipe['cells'] == 5
