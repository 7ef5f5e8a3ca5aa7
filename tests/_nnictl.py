"""The nnictl harness of the end-to-end tests (tests/test_nnictl.py, tests/test_remote.py) and of
scripts/screenshot_webui.py: a tiny config made from an example YAML, an :class:`Experiment` (``nnictl create`` /
``stop`` in a temporary ``$HOME``) and the NNI REST API. It does not import pytest, so that the script runs without
it: a failure raises :class:`ExperimentError`.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
NNICTL = Path(sys.executable).with_name('nnictl')
# Seconds per epoch rather than minutes: 8x8 digits, 64 images, C=4, 3 cells, one weight/arch batch per epoch.
TINY_ARGS = ('--preset tiny --subset 64 --width 4 --cells 3 --limit-train-batches 1 --threads 1')
# NNI gives its manager ~4 s and its tuner process 10 s to start; on a loaded machine they may not make it. When we
# may (root), nnictl and so the manager and tuner run at a raised priority, and the trials drop back to the usual.
BOOST = 10 if hasattr(os, 'geteuid') and os.geteuid() == 0 else 0


class ExperimentError(RuntimeError):
    """An experiment did not start, or did not end in time; the message says what NNI reported."""


def _boost() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - BOOST)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f'http://localhost:{port}/api/v1/nni/{path}', timeout=10) as response:
        return json.loads(response.read().decode())


def tiny_config(tmp: Path, search_space: Dict[str, Any], args: str, trials: int, concurrency: int,
                example: str = 'darts', **fields: Any) -> Path:
    """A tiny config built from examples/<example>.yml (its tuner, training service), run in ``tmp``; ``fields``
    replace top-level keys last."""
    config = yaml.safe_load((ROOT / 'examples' / f'{example}.yml').read_text())
    config.update(
        experimentName=f'nni_darts_ext test {tmp.name}',
        searchSpace={k: {'_type': 'choice', '_value': v} for k, v in search_space.items()},
        # this interpreter, not .venv/bin/python: the test also runs where the venv lives elsewhere
        trialCommand=(f'nice -n {BOOST} ' if BOOST else '')
        + f'{shlex.quote(sys.executable)} -m nni_darts_ext.trial --strategy darts {args}',
        trialCodeDirectory=str(ROOT), trialConcurrency=concurrency, maxTrialNumber=trials,
        maxExperimentDuration='10m', maxTrialDuration='5m',
        experimentWorkingDirectory=str(tmp / 'experiments'))
    config.update(fields)
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
        self.port = free_port()
        self.id: Optional[str] = None
        self._create: Optional[subprocess.Popen] = None

    def start(self, attempts: int = 4, first_trial_timeout: float = 60) -> None:
        """``nnictl create``, then wait for the first trial. On a loaded machine NNI's start-up timeouts can fire:
        the manager not answering within nnictl's ~4 s ("Create experiment failed ... Connection refused"), or the
        tuner process not connecting within the manager's 10 s (status ERROR, "Tuner did not connect"). Both are
        retried on a new port after stopping what was started."""
        problem = ''
        for _ in range(attempts):
            problem = self._create_once() or self._wait_first_trial(first_trial_timeout)
            if not problem:
                return
            if 'Create experiment failed' not in problem and 'Tuner did not connect' not in problem:
                break
            self.stop()
            self.id, self.port = None, free_port()
        raise ExperimentError(problem)

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
                if exp.get('pid') and exp.get('port') == self.port and answers(self.port):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(exp['pid'], 9)
        with contextlib.suppress(OSError):
            manifest.unlink()


def stop_all(experiments: List[Experiment]) -> None:
    procs = [exp.begin_stop() for exp in experiments]  # side by side: each nnictl takes seconds to start
    for exp, proc in zip(experiments, procs):
        exp.finish_stop(proc)


def answers(port: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        _get(port, 'check-status')
        return True
    return False


def wait_done(port: int, timeout: float) -> str:
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status = _get(port, 'check-status')
            if status['status'] in ('DONE', 'ERROR', 'STOPPED'):
                return status['status']
        time.sleep(2)
    trials = _get(port, 'trial-jobs')
    raise ExperimentError(f'experiment not DONE after {timeout:.0f} s: {status}; trials {trials}')


def trial_dir(trial: Dict[str, Any]) -> Path:
    return Path(trial['logPath'].replace('file://localhost:', ''))


def metric_data(port: int) -> List[Dict[str, Any]]:
    rows = _get(port, 'metric-data')
    for row in rows:
        value = json.loads(row['data'])
        row['value'] = json.loads(value) if isinstance(value, str) else value
    return rows

