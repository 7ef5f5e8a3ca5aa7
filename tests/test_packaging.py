"""Packaging: the wheel builds from pyproject.toml, installs into a fresh venv with constraints.txt and
runs from outside the repository; the metadata declares every third-party import of the package."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _wheel import ROOT, clean_env, installed_venv

# import name -> distribution name, for the imports whose names differ
DIST = {'sklearn': 'scikit-learn', 'yaml': 'pyyaml', 'pytorch_lightning': 'pytorch-lightning', 'PIL': 'pillow'}


def _pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        pytest.skip('tomllib needs Python 3.11')
    return tomllib.loads((ROOT / 'pyproject.toml').read_text())


def _name(requirement: str) -> str:
    return re.split(r'[<>=!~\[; ]', requirement, maxsplit=1)[0].lower()


def test_every_third_party_import_is_declared():
    meta = _pyproject()['project']
    declared = {_name(r) for r in meta['dependencies']}
    imported = set()
    for path in (ROOT / 'nni_darts_ext').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split('.')[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split('.')[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != 'nni_darts_ext'}
    assert {DIST.get(m, m).lower() for m in third_party} <= declared
    # exact pins live in constraints.txt and cover every dependency
    pins = {_name(line) for line in (ROOT / 'constraints.txt').read_text().splitlines()
            if line and not line.startswith('#')}
    assert declared <= {p.replace('_', '-') for p in pins} | pins
    assert not any('==' in r for r in meta['dependencies']), 'exact pins belong in constraints.txt'
    # nnictl imports pkg_resources: a plain install must bring a setuptools that has it and does not warn
    assert 'setuptools>=77.0.3,<80.9' in meta['dependencies']
    assert meta['optional-dependencies']['nnictl'] == ['setuptools>=77.0.3,<80.9']  # the old extra still installs
    assert 'setuptools==80.8.0' in (ROOT / 'constraints.txt').read_text().splitlines()
    assert '-c constraints.txt' in (ROOT / 'scripts' / 'bootstrap.sh').read_text()


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_searches_outside_the_repo(tmp_path, tmp_path_factory):
    wheel, venv = installed_venv(tmp_path_factory)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(n.endswith('licenses/LICENSE') for n in names) and any(n.endswith('licenses/NOTICE') for n in names)
    assert not any(n.startswith('tests/') for n in names)
    # the nnictl configs ship inside the package; the metadata says where the project lives
    assert {f'nni_darts_ext/examples/{n}.yml' for n in ('darts', 'pdarts', 'pcdarts')} <= set(names)
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    for label in ('Source', 'Documentation', 'Issues'):
        assert re.search(rf'^Project-URL: {label}, https://', metadata, re.M), metadata[:2000]
    assert re.search(r'^Requires-Dist: setuptools<80\.9,>=77\.0\.3$', metadata, re.M), metadata[:2000]
    python = venv / 'bin' / 'python'
    run_dir = tmp_path / 'elsewhere'
    run_dir.mkdir()

    def run(*args, timeout=600):
        return subprocess.run([str(python), *args], env=clean_env(), cwd=run_dir, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    where = run('-c', 'import nni_darts_ext; print(nni_darts_ext.__file__)')
    assert Path(where.stdout.strip()).is_relative_to(venv), where
    from nni_darts_ext import __version__
    version = run('-m', 'nni_darts_ext', '--version')
    assert version.stdout.strip() == f'nni_darts_ext {__version__}', version
    search = run('-m', 'nni_darts_ext', 'search', '--preset', 'tiny', '--subset', '64', '--width', '4',
                 '--limit-train-batches', '1', '--threads', '1', '--out', 'out')
    assert search.returncode == 0, search.stderr[-3000:]
    assert (run_dir / 'out' / 'arch.json').is_file() and 'supernet val acc' in search.stdout


def test_setup_py_shim_reads_pyproject(tmp_path):
    """setup.py is the standard shim: pyproject.toml stays the only place of the metadata."""
    text = (ROOT / 'setup.py').read_text()
    assert [line for line in text.splitlines() if line and not line.startswith('#')] == [
        'from setuptools import setup', 'setup()']
    from nni_darts_ext import __version__
    proc = subprocess.run([sys.executable, 'setup.py', '--version'], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == __version__, proc.stderr
