"""The package built as a wheel and installed into a fresh venv (once per pytest process): the pip-installed
setting of test_packaging.py and test_nnictl.py."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ('nni_darts_ext', 'pyproject.toml', 'setup.py', 'README.md', 'LICENSE', 'NOTICE')
_CACHE: Dict[str, Any] = {}


def clean_env() -> Dict[str, str]:
    """This environment without what would import the checkout (PYTHONPATH) or change warnings."""
    return {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONWARNINGS')}


def installed_venv(tmp_path_factory: Any) -> Tuple[Path, Path]:
    """``(wheel, venv)``: a wheel built from a copy of the package files and a fresh venv it was pip-installed into
    with constraints.txt. The venv sees this environment's packages (torch, NNI ..., as a user's environment would
    have them) through a plain path entry, so the editable install of the checkout (a .pth finder) is not active."""
    if 'venv' not in _CACHE:
        tmp = tmp_path_factory.mktemp('wheel')
        src = tmp / 'src'
        src.mkdir()
        for name in PACKAGE_FILES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                shutil.copy2(ROOT / name, src / name)
        env = clean_env()
        # offline and fast: no build isolation (this environment's setuptools builds it)
        subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                        '--no-index', '-w', str(tmp / 'dist'), str(src)], check=True, env=env, cwd=tmp, timeout=600)
        (wheel,) = (tmp / 'dist').glob('nni_darts_ext-*.whl')
        venv = tmp / 'venv'
        subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=300)
        python = venv / 'bin' / 'python'
        purelib = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                 check=True, capture_output=True, text=True).stdout.strip()
        Path(purelib, '_host_packages.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
        install = subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '-q',
                                  '--no-index', '-c', str(ROOT / 'constraints.txt'), str(wheel)], env=env, cwd=tmp,
                                 capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stdout + install.stderr
        _CACHE['venv'] = (wheel, venv)
    return _CACHE['venv']
