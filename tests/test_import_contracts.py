"""The import contracts of pyproject.toml (``[tool.importlinter]``), checked by import-linter's ``lint-imports``.

The contracts: the library (space <- oneshot <- strategies) never imports the application (cli, trial, search,
retrain), and the package's modules import each other without cycles. The imports that break them today are listed
in their ``ignore_imports`` (to be removed by moving code); an entry that no longer matches is an error too.
"""
from __future__ import annotations

import re
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


def test_the_contracts_catch_the_imports_they_ignore(tmp_path):
    """Without their ignore lists both contracts break: today's cycles (cli <-> retrain, search <-> retrain,
    search <-> evaluator, space -> rundir -> oneshot -> space) are detected, not merely allowed."""
    text = (ROOT / 'pyproject.toml').read_text()
    stripped, count = re.subn(r'\nignore_imports = \[.*?\n\]\n', '\n', text, flags=re.S)
    assert count == 2
    config = tmp_path / 'pyproject.toml'
    config.write_text(stripped)
    proc = _run(config)
    assert proc.returncode == 1, proc.stdout[-5000:]
    assert 'Contracts: 0 kept, 2 broken.' in proc.stdout, proc.stdout[-5000:]
    assert 'nni_darts_ext.space.genotype -> nni_darts_ext.rundir' in proc.stdout
