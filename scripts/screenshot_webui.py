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
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
# One nnictl harness for this script and the end-to-end tests: it lives with the tests, which exercise it in CI.
sys.path.insert(0, str(ROOT / 'tests'))
from _nnictl import BOOST, TINY_ARGS, Experiment, ExperimentError, tiny_config, wait_done  # noqa: E402

# The flags that work on this kind of machine (closed network; see the environment notes).
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--hide-scrollbars']


def _get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def _config(tmp: Path, tiny: bool) -> Path:
    """examples/darts.yml as it is (cpu preset, default metric = the derived net retrained 3 epochs; order 1 and 2
    side by side), or with ``tiny`` a seconds-long version whose numbers mean nothing (to check the script)."""
    if tiny:
        return tiny_config(tmp, {'seed': [0, 1], 'epochs': [3]}, TINY_ARGS, trials=2, concurrency=2,
                           experimentName='darts-tiny-webui', maxTrialDuration='10m')
    import yaml
    config = yaml.safe_load((ROOT / 'examples' / 'darts.yml').read_text())
    command = config['trialCommand'].replace('.venv/bin/python', shlex.quote(sys.executable))
    config.update(
        trialCommand=(f'nice -n {BOOST} ' if BOOST else '') + command,
        trialCodeDirectory=str(ROOT), trialConcurrency=2, maxTrialNumber=2,
        experimentWorkingDirectory=str(tmp / 'experiments'))
    path = tmp / 'config.yml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


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
            " if ((on.some(w => t.endsWith(w)) && !checked) || (off.some(w => t.endsWith(w)) && checked))"
            " { c.querySelector('input').click(); n++; } }"
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
            dialog = ("Array.from(document.querySelectorAll('.ms-Checkbox'))"
                      ".some(c => c.textContent.includes('(space)'))")
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
    exp = Experiment(tmp, _config(tmp, args.tiny))
    try:
        exp.start(attempts=6)
        print(f'experiment {exp.id}: http://localhost:{exp.port}', flush=True)
        try:
            status = wait_done(exp.port, 900 if args.tiny else 3 * 3600)
        except ExperimentError as exc:  # not done in time: the page shows what there is
            status = str(exc)
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
