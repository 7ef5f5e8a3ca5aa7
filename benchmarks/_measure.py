"""Shared measurement code of the benchmarks: one search step setting, run in a fresh process, timed and metered.

A *spec* (a JSON-able dict) names a strategy and a size; :func:`measure` builds the space, the DARTS evaluator on
random tensors and the strategy, runs ``steps + warmup`` real search steps through NNI and Lightning
(``strategy.initialize`` + ``run``: ``DartsSearchModule.training_step`` = ``arch_step`` + ``weight_step``), and
returns the per-step wall and CPU times and the activation memory of every Trainer fit (P-DARTS fits once per
stage). :func:`run_spec` runs it in a fresh subprocess (``python -m benchmarks._measure SPEC``) or in this process.

How memory is measured (one method for every configuration):
* CPU: at ``on_train_start`` (supernet built and mutated, optimisers created, data allocated) the kernel's peak-RSS
  counter is reset (``echo 5 > /proc/self/clear_refs``) and the RSS read (``VmRSS``); at ``on_train_end`` the peak
  RSS since the reset (``VmHWM``) is read. Activation memory = peak - baseline: the forward activations kept for
  backward, gradients and temporaries of the steps, and the weight-gradient / momentum buffers created at the first
  step. Where ``clear_refs`` cannot be written, ``ru_maxrss`` is used (then the peak includes the set-up). Only a
  fresh process gives a clean baseline: in-process runs (``--smoke``) are not comparable.
* GPU: ``torch.cuda.reset_peak_memory_stats`` and ``memory_allocated`` at ``on_train_start``,
  ``max_memory_allocated`` at ``on_train_end`` (tensors only, not the caching allocator's reserve).

Time: wall time of each ``training_step`` (``on_train_batch_start`` -> ``on_train_batch_end``, CUDA synchronised on
a GPU); the first ``warmup`` steps of each fit are not counted; the median of the rest is the step time.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ['ROOT', 'CLASSES', 'rss_status', 'reset_peak_rss', 'make_probe', 'measure', 'run_spec', 'interleaved',
           'summarise', 'fit_exponent', 'git_commit', 'shown_path', 'device_name', 'build_strategy']

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def rss_status() -> Dict[str, int]:
    """VmRSS / VmHWM of this process in bytes."""
    values = {}
    with open('/proc/self/status') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where that is not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def make_probe(cuda: bool = False) -> Any:
    """A Lightning callback recording, per fit, the step times (wall, CPU) and the activation memory."""
    import pytorch_lightning as pl
    import torch

    class Probe(pl.Callback):
        def __init__(self):
            self.fits: List[Dict[str, Any]] = []

        def _sync(self):
            if cuda:
                torch.cuda.synchronize()

        def on_train_start(self, trainer, pl_module):
            gc.collect()
            self._sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                fit = dict(baseline=torch.cuda.memory_allocated(), peak_reset=True)
            else:
                reset = reset_peak_rss()
                fit = dict(baseline=rss_status()['VmRSS'], peak_reset=reset)
            self.fits.append(dict(fit, times=[], cpu_times=[], peak=0))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._sync()
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self._sync()
            self.fits[-1]['times'].append(time.perf_counter() - self._t)
            self.fits[-1]['cpu_times'].append(time.process_time() - self._c)

        def on_train_end(self, trainer, pl_module):
            fit = self.fits[-1]
            if cuda:
                fit['peak'] = torch.cuda.max_memory_allocated()
            else:
                fit['peak'] = (rss_status()['VmHWM'] if fit['peak_reset']
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    return Probe()


def build_strategy(spec: Mapping[str, Any]) -> Any:
    """The NNI strategy of a spec: ``nni`` (NNI's built-in DARTS), ``darts`` (order 1/2), ``pcdarts`` (K),
    ``pdarts`` (all stages, one epoch each, no warm-up)."""
    name = spec['strategy']
    if name == 'nni':
        from nni.nas.strategy import DARTS
        return DARTS(gradient_clip_val=5.0)
    common = dict(order=spec.get('order', 1), warmup_epochs=0, channels_last=spec.get('channels_last', True))
    if name == 'darts':
        from nni_darts_ext.strategies.darts import DartsStrategy
        return DartsStrategy(**common)
    if name == 'pcdarts':
        from nni_darts_ext.strategies.pcdarts import PcDartsStrategy
        return PcDartsStrategy(k=spec['k'], **common)
    if name == 'pdarts':
        from nni_darts_ext.strategies.pdarts import PDartsStrategy
        return PDartsStrategy(cells=tuple(spec['stage_cells']), num_ops=(8, 5, 3), skip_dropout=(0.1, 0.4, 0.7),
                              epochs_per_stage=1, max_skip=2, **common)
    raise ValueError(f'strategy={name!r} is invalid; allowed: nni, darts, pcdarts, pdarts.')


def measure(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """Run the spec's search steps in this process and return times and memory (see the module docstring).

    Spec keys: ``strategy``, ``order``, ``k``, ``stage_cells`` (see :func:`build_strategy`), ``width``, ``cells``,
    ``batch``, ``channels``, ``image``, ``steps``, ``warmup``, ``threads``, ``accelerator`` (default ``cpu``),
    ``precision`` (default ``32-true``), ``compile`` (``torch.compile`` the supernet), ``channels_last``,
    ``dataset`` (optional: the search split of a named dataset instead of random tensors).
    """
    with warnings.catch_warnings():  # NNI's untraced-DataLoader and Lightning's notices, once per run
        warnings.simplefilter('ignore')
        return _measure(spec)


def _measure(spec: Mapping[str, Any]) -> Dict[str, Any]:
    import torch
    for name in ('pytorch_lightning', 'lightning', 'lightning.pytorch', 'nni'):
        logging.getLogger(name).setLevel(logging.ERROR)
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from torch.utils.data import DataLoader, TensorDataset

    from nni_darts_ext import DartsCellSpace
    from nni_darts_ext.evaluator import DartsClassification

    if spec.get('threads'):
        torch.set_num_threads(int(spec['threads']))
    torch.manual_seed(0)
    accelerator = spec.get('accelerator', 'cpu')
    cuda = accelerator in ('gpu', 'cuda')
    steps = int(spec['steps']) + int(spec['warmup'])
    n = spec['batch'] * steps
    shape = (spec['channels'], spec['image'], spec['image'])

    if spec.get('dataset'):  # real images of the search split (both halves) instead of random tensors
        from nni_darts_ext.data import search_split
        halves = iter(search_split(spec['dataset'], subset=2 * n, seed=0))
    else:
        halves = iter(TensorDataset(torch.randn(n, *shape), torch.randint(0, CLASSES, (n,))) for _ in range(2))

    def loader():
        return DataLoader(next(halves), batch_size=spec['batch'], shuffle=False, num_workers=0, pin_memory=cuda)

    probe = make_probe(cuda)
    callbacks = [probe]
    if spec.get('compile'):
        from nni_darts_ext.accel import CompileSupernet
        callbacks.append(CompileSupernet())
    cells = spec['stage_cells'][0] if spec['strategy'] == 'pdarts' else spec['cells']
    space = DartsCellSpace(width=spec['width'], num_cells=cells, in_channels=shape[0], image_size=shape[1],
                           num_classes=CLASSES)
    evaluator = DartsClassification(
        CLASSES, train_dataloaders=loader(), val_dataloaders=loader(), max_epochs=1, limit_train_batches=steps,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        logger=False, enable_checkpointing=False, callbacks=callbacks, accelerator=accelerator, devices=1,
        precision=spec.get('precision', '32-true'))
    strategy = build_strategy(spec)
    start = time.perf_counter()
    strategy.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    strategy.run()
    seconds = time.perf_counter() - start
    fits = []
    for fit in probe.fits:
        timed = fit['times'][spec['warmup']:] or fit['times']
        cpu = fit['cpu_times'][spec['warmup']:] or fit['cpu_times']
        fits.append(dict(fit, step_time=statistics.median(timed), step_cpu_time=statistics.median(cpu),
                         activation_bytes=fit['peak'] - fit['baseline']))
    if not fits or any(len(f['times']) != steps for f in fits):
        raise RuntimeError(f'expected {steps} steps per fit, got {[len(f["times"]) for f in fits]} for {dict(spec)}')
    return dict(spec=dict(spec), fits=fits, step_time=fits[0]['step_time'],
                activation_bytes=fits[0]['activation_bytes'], seconds=seconds, loadavg=os.getloadavg()[0])


def run_spec(spec: Mapping[str, Any], fresh: bool = True, timeout: Optional[float] = None) -> Dict[str, Any]:
    """:func:`measure` in a fresh subprocess (``fresh``) or in this process."""
    if not fresh:
        return measure(spec)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    proc = subprocess.run([sys.executable, '-m', 'benchmarks._measure', json.dumps(dict(spec))], cwd=str(ROOT),
                          env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
    if proc.returncode or not lines:
        raise RuntimeError(f'{dict(spec)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def interleaved(specs: Mapping[str, Mapping[str, Any]], repeats: int, fresh: bool = True,
                report: Optional[Callable[[str, Dict[str, Any]], None]] = None) -> Dict[str, List[Dict[str, Any]]]:
    """Run every spec ``repeats`` times, interleaved (A B C A B C ...), so that a change of machine load hits all
    configurations alike; returns the runs of each name."""
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in specs}
    for _ in range(repeats):
        for name, spec in specs.items():
            result = run_spec(spec, fresh)
            runs[name].append(result)
            if report:
                report(name, result)
    return runs


def summarise(values: Sequence[float]) -> Dict[str, Any]:
    """Median, min, max and relative spread ((max - min) / median) of repeated measurements."""
    values = [float(v) for v in values]
    median = statistics.median(values)
    return dict(median=median, min=min(values), max=max(values), runs=values,
                spread=(max(values) - min(values)) / median if median else None)


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Least-squares slope a of log y = a log x + b (y ∝ x^a); None with fewer than two positive points."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y is not None and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else None


def git_commit() -> Optional[str]:
    """The short commit of the measured code (None outside a git checkout)."""
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True,
                              cwd=str(ROOT)).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (results.json stays valid in any clone), else absolute;
    a relative path is kept as it is."""
    if not Path(path).is_absolute():
        return Path(path).as_posix()
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def device_name(accelerator: str = 'cpu') -> str:
    """``cpu: <model> (<n> cores)`` or the CUDA device's name."""
    if accelerator in ('gpu', 'cuda'):
        import torch
        return f'cuda: {torch.cuda.get_device_name(0)}'
    model = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), model)
    except OSError:
        pass
    return f'cpu: {model} ({os.cpu_count()} cores)'


if __name__ == '__main__':
    print('RESULT ' + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
