"""``ruff check`` of the package, its tests, benchmarks and scripts with the configuration of pyproject.toml
(``[tool.ruff]``): no finding."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _ruff() -> list:
    exe = Path(sys.executable).with_name('ruff')
    if exe.is_file():
        return [str(exe)]
    found = shutil.which('ruff')
    if found is None:
        pytest.fail('ruff is not installed; it is in the test extra: pip install -c constraints.txt -e ".[test]"')
    return [found]


def test_ruff_check_finds_nothing_in_the_package():
    proc = subprocess.run([*_ruff(), 'check', '--no-cache', '--output-format', 'concise', 'nni_darts_ext', 'tests',
                           'benchmarks', 'scripts'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_ruff_reads_the_project_configuration(tmp_path):
    """A line over the configured 120 characters is a finding (so the test above checks with pyproject's rules)."""
    bad = tmp_path / 'nni_darts_ext' / 'bad.py'
    bad.parent.mkdir()
    bad.write_text('x = "' + 'a' * 130 + '"\nimport os\n')
    proc = subprocess.run([*_ruff(), 'check', '--no-cache', '--config', str(ROOT / 'pyproject.toml'),
                           '--output-format', 'concise', str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and 'E501' in proc.stdout and 'F401' in proc.stdout and 'E402' in proc.stdout
