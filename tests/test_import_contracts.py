"""The import contracts of pyproject.toml (``[tool.importlinter]``), checked by import-linter's ``lint-imports``.

The contracts: the library never imports the application package (``app``: the CLI, the nnictl trial, option
generation), each library layer imports only the layers below it, and the package's modules import each other without
cycles; no import is exempt.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name('lint-imports')
    found = str(exe) if exe.is_file() else shutil.which('lint-imports')
    if found is None:
        pytest.fail('import-linter is not installed; it is in the test extra: '
                    'pip install -c constraints.txt -e ".[test]"')
    return found


def _run(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_lint_imports(), '--config', str(config), '--no-cache'], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_are_kept():
    proc = _run(ROOT / 'pyproject.toml')
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert 'Contracts: 2 kept, 0 broken.' in proc.stdout


def test_the_contracts_catch_the_circles_of_the_old_layout(tmp_path):
    """The imports that made the old circles (retrain -> cli for the thread helpers, evaluator -> search for the
    weight recipes), put back into a copy of the package, break both contracts: they are detected, not allowed."""
    shutil.copytree(ROOT / 'nni_darts_ext', tmp_path / 'nni_darts_ext', ignore=shutil.ignore_patterns('*.gz'))
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    for module, line in (('retrain.py', 'from .cli import _set_threads  # noqa'),
                         ('evaluator.py', 'from .search import run_search  # noqa')):
        path = tmp_path / 'nni_darts_ext' / module
        path.write_text(path.read_text() + '\n' + line + '\n')
    proc = subprocess.run([_lint_imports(), '--config', str(tmp_path / 'pyproject.toml'), '--no-cache'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert proc.returncode == 1, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert 'Contracts: 0 kept, 2 broken.' in proc.stdout, proc.stdout[-5000:]
    assert 'nni_darts_ext.retrain -> nni_darts_ext.cli' in proc.stdout
    assert 'nni_darts_ext.evaluator -> nni_darts_ext.search' in proc.stdout


def test_no_import_is_exempt():
    """The contracts list no ``ignore_imports``: every import of the package keeps them."""
    assert 'ignore_imports' not in (ROOT / 'pyproject.toml').read_text()


def test_moved_names_keep_working():
    """The modules and names that moved keep their old import paths: the same module objects, or the moved name
    with a DeprecationWarning."""
    import warnings

    from nni_darts_ext import app, cli, options, retrain, settings, trial, viz
    from nni_darts_ext.app import plot_command, train_command  # noqa: F401 -- the homes, as attributes of app
    assert (cli, options, trial) == (app.cli, app.options, app.trial)
    assert retrain.RetrainConfig is settings.RetrainSettings and retrain.PRESETS is settings.RETRAIN_PRESETS
    from nni_darts_ext.search import WEIGHT_RECIPES, SearchSettings
    assert SearchSettings is settings.SearchSettings and WEIGHT_RECIPES is settings.WEIGHT_RECIPES
    for module, names, home in ((retrain, ('TrainCommand', 'train_settings', 'add_arguments', 'run'),
                                 app.train_command), (viz, ('add_arguments', 'run'), app.plot_command)):
        for name in names:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always', DeprecationWarning)
                assert getattr(module, name) is getattr(home, name)
            assert any(issubclass(w.category, DeprecationWarning) and home.__name__ in str(w.message)
                       for w in caught)
