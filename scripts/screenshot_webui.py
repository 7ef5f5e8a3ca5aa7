#!/usr/bin/env python
"""Screenshot of the NNI web UI's trial-detail page of ``examples/darts.yml`` -> docs/webui_trial.png.

Not part of CI. Needs Debian's Chromium (``apt-get install -y chromium``). Run from anywhere::

    .venv/bin/python scripts/screenshot_webui.py [--out docs/webui_trial.png] [--keep] [--tiny]

It starts ``nnictl create`` on examples/darts.yml (Fashion-MNIST, ``cpu`` preset, DARTS order 1 and 2 side by side,
each trial's default metric the derived network retrained 3 epochs; ~15 min on 2 cores; ``--tiny``: 8x8 digits,
seconds, numbers meaningless) in a temporary folder
(experiment folder and ``$HOME``, so nnictl's manifest too), waits until the experiment is DONE, opens
``http://localhost:PORT/detail`` in headless Chromium through the DevTools protocol, expands the first trial (its
intermediate results), saves the PNG and stops the experiment. ``--url-only`` prints the page instead of waiting.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
NNICTL = Path(sys.executable).with_name('nnictl')
# The flags that work on this kind of machine (closed network; see the environment notes).
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--hide-scrollbars']
TINY = ('--preset tiny --subset 64 --width 4 --cells 3 --limit-train-batches 1 --threads 1')
# NNI gives its manager ~4 s and its tuner process 10 s to start, which a loaded machine may miss: when we may (root),
# nnictl, the manager and the tuner run at a raised priority, and the trials drop back to the usual one.
BOOST = 10 if hasattr(os, 'geteuid') and os.geteuid() == 0 else 0


def _boost() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - BOOST)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def _config(tmp: Path, tiny: bool) -> Path:
    """examples/darts.yml as it is (cpu preset, default metric = the derived net retrained 3 epochs; order 1 and 2
    side by side), or with ``tiny`` a seconds-long version whose numbers mean nothing (to check the script)."""
    import yaml
    config = yaml.safe_load((ROOT / 'examples' / 'darts.yml').read_text())
    command = config['trialCommand'].replace('.venv/bin/python', shlex.quote(sys.executable))
    if tiny:
        config['searchSpace'] = {'seed': {'_type': 'choice', '_value': [0, 1]},
                                 'epochs': {'_type': 'choice', '_value': [3]}}
        command = f'{shlex.quote(sys.executable)} -m nni_darts_ext.trial --strategy darts {TINY}'
    config.update(
        experimentName='darts-tiny-webui' if tiny else config['experimentName'],
        trialCommand=(f'nice -n {BOOST} ' if BOOST else '') + command,
        trialCodeDirectory=str(ROOT), trialConcurrency=2, maxTrialNumber=2,
        maxTrialDuration='10m' if tiny else config['maxTrialDuration'],
        experimentWorkingDirectory=str(tmp / 'experiments'))
    path = tmp / 'config.yml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Experiment:
    def __init__(self, tmp: Path, tiny: bool = False):
        self.tmp = tmp
        (tmp / 'home').mkdir()
        self.env = {**os.environ, 'HOME': str(tmp / 'home'), 'PYTHONWARNINGS': 'ignore'}
        mpl = Path.home() / '.cache' / 'matplotlib'
        if mpl.is_dir():
            self.env.setdefault('MPLCONFIGDIR', str(mpl))
        self.config = _config(tmp, tiny)
        self.port: int = 0
        self.id: Optional[str] = None

    def api(self, path: str) -> Any:
        return _get(f'http://localhost:{self.port}/api/v1/nni/{path}')

    def start(self, attempts: int = 6) -> None:
        for _ in range(attempts):
            self.port = _free_port()
            proc = subprocess.run([str(NNICTL), 'create', '--config', str(self.config), '--port', str(self.port)],
                                  env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=180,
                                  preexec_fn=_boost if BOOST else None)
            out = proc.stdout + proc.stderr
            found = re.search(r'Experiment ID: (\w+)', re.sub(r'\x1b\[[0-9;]*m', '', out))
            self.id = found.group(1) if found else None
            if proc.returncode == 0 and self.id and self._tuner_connected():
                print(f'experiment {self.id}: http://localhost:{self.port}', flush=True)
                return
            print(f'nnictl create did not come up (NNI start-up timeouts on a loaded machine?); retrying\n{out}',
                  file=sys.stderr, flush=True)
            self.stop()
        raise SystemExit('nnictl create failed')

    def _tuner_connected(self, timeout: float = 60) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if self.api('check-status')['status'] == 'ERROR':
                    return False
                if self.api('trial-jobs'):
                    return True
            time.sleep(1)
        return False

    def wait_done(self, timeout: float) -> str:
        deadline = time.time() + timeout
        status = '?'
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError):
                status = self.api('check-status')['status']
                if status in ('DONE', 'ERROR', 'STOPPED'):
                    break
            time.sleep(3)
        return status

    def stop(self) -> None:
        args = [str(NNICTL), 'stop', self.id] if self.id else [str(NNICTL), 'stop', '--all']
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        # a manager that still answers is killed through the pid nnictl recorded in its manifest
        manifest = self.tmp / 'home' / 'nni-experiments' / '.experiment'
        with contextlib.suppress(OSError, ValueError):
            for exp in json.loads(manifest.read_text()).values():
                if exp.get('pid') and exp.get('port') == self.port and self._answers():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(exp['pid'], 9)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            self.api('check-status')
            return True
        return False


class Chromium:
    """Headless Chromium driven over the DevTools protocol (``websockets``, which NNI already installs)."""

    def __init__(self, binary: str, profile: Path, width: int, height: int):
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f'--user-data-dir={profile}',
                                      '--remote-debugging-port=0', f'--window-size={width},{height}', 'about:blank'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / 'DevToolsActivePort'
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError('Chromium did not start')
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        page = next(t for t in _get(f'http://127.0.0.1:{port}/json/list') if t['type'] == 'page')
        from websockets.sync.client import connect
        self.ws = connect(page['webSocketDebuggerUrl'], max_size=None, open_timeout=30).__enter__()
        self.seq = 0
        self.width, self.height = width, height

    def call(self, method: str, **params: Any) -> Any:
        self.seq += 1
        self.ws.send(json.dumps({'id': self.seq, 'method': method, 'params': params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get('id') == self.seq:
                if 'error' in message:
                    raise RuntimeError(f'{method}: {message["error"]}')
                return message.get('result', {})

    def js(self, expression: str) -> Any:
        result = self.call('Runtime.evaluate', expression=expression, returnByValue=True)
        return result.get('result', {}).get('value')

    def wait_for(self, expression: str, timeout: float = 60) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expression):
                return True
            time.sleep(0.5)
        return False

    def screenshot(self, path: Path) -> None:
        self.call('Emulation.setDeviceMetricsOverride', width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)
        data = self.call('Page.captureScreenshot', format='png')['data']
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()


_CLICK = ("(() => { const b = Array.from(document.querySelectorAll(%s))"
          ".find(e => e.textContent.trim() === %s); if (b) b.click(); return !!b; })()")


def _click(selector: str, text: str) -> str:
    return _CLICK % (json.dumps(selector), json.dumps(text))
# The table's columns: the final result's extra keys, the search-space seed and the number of intermediate results.
_COLUMNS = ("(() => { const on = %s, off = %s; let n = 0;"
            " for (const c of document.querySelectorAll('.ms-Checkbox')) { const t = c.textContent.trim();"
            " const checked = c.classList.contains('is-checked');"
            " if ((on.some(w => t.endsWith(w)) && !checked) || (off.some(w => t.endsWith(w)) && checked)) { c.querySelector('input').click(); n++; } }"
            " return n; })()")


def capture(url: str, out: Path, width: int, height: int) -> None:
    binary = shutil.which('chromium') or shutil.which('chromium-browser')
    if not binary:
        raise SystemExit('Chromium not found: apt-get install -y chromium')
    with tempfile.TemporaryDirectory(prefix='chromium-') as profile:
        browser = Chromium(binary, Path(profile), width, height)
        try:
            browser.call('Page.navigate', url=url)
            if not browser.wait_for("document.querySelectorAll('.ms-DetailsRow').length >= 1", 90):
                print('warning: no trial rows rendered', file=sys.stderr)
            time.sleep(2)
            dialog = "Array.from(document.querySelectorAll('.ms-Checkbox')).some(c => c.textContent.includes('(space)'))"
            if browser.js(_click('button', 'Add/Remove columns')) and browser.wait_for(dialog, 30):
                browser.js(_COLUMNS % (json.dumps(['Intermediate results (#)', 'seed (space)', 'params (metric)',
                                                   'normal_skip_connects (metric)', 'genotype (metric)']),
                                       json.dumps(['ID', 'Duration'])))
                time.sleep(0.5)
                browser.js(_click('button', 'Save'))
                browser.wait_for(f'!({dialog})', 30)
                time.sleep(1)
            browser.js(_click('button, [role=tab], span', 'Intermediate result'))  # the per-epoch curves of all trials
            time.sleep(2)
            # expand the first trial: its parameters (the Log tab there gives its folder)
            browser.js("(() => { const i = document.querySelector('.ms-DetailsRow i[data-icon-name=ChevronRight]');"
                       " if (i) i.click(); return !!i; })()")
            time.sleep(2.5)
            out.parent.mkdir(parents=True, exist_ok=True)
            browser.screenshot(out)
        finally:
            browser.close()


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=str(ROOT / 'docs' / 'webui_trial.png'))
    p.add_argument('--width', type=int, default=1600)
    p.add_argument('--height', type=int, default=1000)
    p.add_argument('--page', default='detail', help='web UI page: detail (trials) or oview (overview)')
    p.add_argument('--url', default=None, help='screenshot this running web UI instead of starting an experiment')
    p.add_argument('--tiny', action='store_true', help='seconds-long trials (checks the script; numbers mean nothing)')
    p.add_argument('--keep', action='store_true', help='leave the experiment running (stop it with nnictl stop)')
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if args.url:
        capture(args.url, out, args.width, args.height)
        print(f'saved {out}')
        return 0
    tmp = Path(tempfile.mkdtemp(prefix='nni_webui_'))
    exp = Experiment(tmp, args.tiny)
    try:
        exp.start()
        status = exp.wait_done(900 if args.tiny else 3 * 3600)
        print(f'experiment {exp.id}: {status}', flush=True)
        capture(f'http://localhost:{exp.port}/{args.page}', out, args.width, args.height)
        print(f'saved {out}')
    finally:
        if args.keep:
            print(f'left running: http://localhost:{exp.port}  (HOME={tmp / "home"} nnictl stop {exp.id})')
        else:
            exp.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
