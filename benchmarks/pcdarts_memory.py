"""PC-DARTS (K=4) against DARTS (first order): activation memory and time of the search step.

Setting: the DARTS reference search network (``DartsCellSpace(width=16, num_cells=8)``, 3x32x32 inputs, 10 classes),
batch 64 for both the weight and the architecture batch, the DARTS SGD evaluator, ``warmup_epochs=0`` so that every
step is a full search step. The step is the real one: ``NasExperiment(space, evaluator, strategy).run()`` with a
Lightning ``Trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=0)``, i.e. ``DartsSearchModule.
training_step`` = ``arch_step`` (first order: forward + backward on the architecture batch, Adam on α [and β]) +
``weight_step`` (forward + backward on the weight batch, SGD). Random tensors stand in for CIFAR-10 (offline
machine; neither memory nor time depends on pixel values); ``num_workers=0`` keeps all memory in one process.

How memory is measured: every configuration runs in a **fresh subprocess**. A Lightning callback, at
``on_train_start`` (supernet built and mutated, weights moved to the memory format, optimisers created, data
tensors allocated), resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``) and reads the
current RSS (``VmRSS``); at ``on_train_end`` it reads the peak RSS since the reset (``VmHWM``). Activation memory =
peak - baseline: the forward activations kept for backward, the gradients and temporaries of the search steps
(also the weight gradient / momentum buffers created at the first step, ~3x the 2 M weights, about 25 MB).
Where ``clear_refs`` cannot be written, ``ru_maxrss`` is used (then the peak includes anything before training).

Time: wall time of each ``training_step`` (``on_train_batch_start`` -> ``on_train_batch_end``); the median of
steps 2..N is reported (step 1 warms the allocator up). The process CPU time of the same steps is reported too:
on a machine shared with other jobs it measures the work done, whereas wall time also counts the time the
process waited for a core (the load average at the end of each run is printed). Both configurations use the same
number of threads (``--threads``, default all cores) and the same memory format; both formats are measured.

Targets (issue #4): memory ratio PC/DARTS <= 0.35; time ratio <= 0.65 in ``channels_last``.

Usage: ``python benchmarks/pcdarts_memory.py [--steps 4] [--formats channels_last contiguous] [--json out.json]``
(several minutes on 2 CPU cores; DARTS needs ~9 GB of RAM).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List

CHANNELS, CLASSES = 3, 10


def _status() -> Dict[str, int]:
    """VmRSS / VmHWM of this process in bytes."""
    values = {}
    with open('/proc/self/status') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def child(strategy_name: str, memory_format: str, steps: int, k: int, threads: int, width: int = 16, cells: int = 8,
          batch: int = 64, image: int = 32) -> dict:
    import torch
    torch.set_num_threads(threads)
    import logging
    for name in ('pytorch_lightning', 'lightning', 'nni'):
        logging.getLogger(name).setLevel(logging.ERROR)
    import pytorch_lightning as pl
    from nni.nas.experiment import NasExperiment
    from torch.utils.data import DataLoader, TensorDataset

    from nni_darts_ext import DartsCellSpace
    from nni_darts_ext.evaluator import DartsClassification
    from nni_darts_ext.strategies.darts import DartsStrategy
    from nni_darts_ext.strategies.pcdarts import PcDartsStrategy

    torch.manual_seed(0)
    n = batch * steps

    def loader():
        data = TensorDataset(torch.randn(n, CHANNELS, image, image), torch.randint(0, CLASSES, (n,)))
        return DataLoader(data, batch_size=batch, shuffle=False, num_workers=0)

    class Probe(pl.Callback):
        def __init__(self):
            self.times: List[float] = []
            self.cpu_times: List[float] = []
            self.baseline = self.peak = 0
            self.reset_ok = False

        def on_train_start(self, trainer, pl_module):
            import gc
            gc.collect()
            self.reset_ok = _reset_peak()
            self.baseline = _status()['VmRSS']

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._t)
            self.cpu_times.append(time.process_time() - self._c)

        def on_train_end(self, trainer, pl_module):
            self.peak = (_status()['VmHWM'] if self.reset_ok
                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    probe = Probe()
    space = DartsCellSpace(width=width, num_cells=cells, in_channels=CHANNELS, image_size=image, num_classes=CLASSES)
    evaluator = DartsClassification(CLASSES, train_dataloaders=loader(), val_dataloaders=loader(), max_epochs=1,
                                    limit_train_batches=steps, limit_val_batches=0, num_sanity_val_steps=0,
                                    enable_progress_bar=False, enable_model_summary=False, logger=False,
                                    enable_checkpointing=False, callbacks=[probe])
    common = dict(order=1, warmup_epochs=0, channels_last=memory_format == 'channels_last')
    strategy = PcDartsStrategy(k=k, **common) if strategy_name == 'pcdarts' else DartsStrategy(**common)
    NasExperiment(space, evaluator, strategy).run()
    assert len(probe.times) == steps, probe.times
    return {'strategy': strategy_name, 'memory_format': memory_format, 'k': k if strategy_name == 'pcdarts' else None,
            'baseline_rss': probe.baseline, 'peak_rss': probe.peak, 'activation_bytes': probe.peak - probe.baseline,
            'peak_reset': probe.reset_ok, 'step_times': probe.times, 'step_cpu_times': probe.cpu_times,
            'step_time': statistics.median(probe.times[1:] or probe.times),
            'step_cpu_time': statistics.median(probe.cpu_times[1:] or probe.cpu_times), 'threads': threads,
            'loadavg_at_end': os.getloadavg()[0]}


def run_config(strategy_name: str, memory_format: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), '--child', strategy_name, memory_format,
           '--steps', str(args.steps), '--k', str(args.k), '--threads', str(args.threads), '--width', str(args.width),
           '--cells', str(args.cells), '--batch', str(args.batch), '--image', str(args.image)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')][-1]
    return json.loads(line[len('RESULT '):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=4)
    parser.add_argument('--k', type=int, default=4)
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--formats', nargs='+', default=['channels_last', 'contiguous'],
                        choices=['channels_last', 'contiguous'])
    parser.add_argument('--width', type=int, default=16, help='C (reference: 16)')
    parser.add_argument('--cells', type=int, default=8, help='cells (reference: 8)')
    parser.add_argument('--batch', type=int, default=64, help='batch size (reference: 64)')
    parser.add_argument('--image', type=int, default=32, help='image size (reference: 32)')
    parser.add_argument('--json', help='write all results to this file')
    parser.add_argument('--child', nargs=2, metavar=('STRATEGY', 'FORMAT'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child[0], args.child[1], args.steps, args.k, args.threads, args.width, args.cells, args.batch,
                       args.image)
        print('RESULT ' + json.dumps(result), flush=True)
        return 0

    print(f'Search size: C={args.width}, {args.cells} cells, batch {args.batch}, {CHANNELS}x{args.image}x{args.image} '
          '(DARTS reference: C=16, 8 cells, batch 64, 3x32x32); '
          f'{args.steps} search steps (arch + weight, first order); {args.threads} threads; fresh process each.')
    results = []
    for memory_format in args.formats:
        row = {}
        for strategy_name in ('darts', 'pcdarts'):
            r = run_config(strategy_name, memory_format, args)
            results.append(r)
            row[strategy_name] = r
            print(f'  {memory_format:13s} {strategy_name:8s} activation {r["activation_bytes"] / 2**30:6.2f} GiB '
                  f'(peak RSS {r["peak_rss"] / 2**30:.2f}, baseline {r["baseline_rss"] / 2**30:.2f}'
                  f'{"" if r["peak_reset"] else ", ru_maxrss"}), step {r["step_time"]:.2f} s wall '
                  f'(steps {", ".join(f"{t:.2f}" for t in r["step_times"])}), {r["step_cpu_time"]:.2f} s CPU; '
                  f'load average {r["loadavg_at_end"]:.1f}', flush=True)
        mem = row['pcdarts']['activation_bytes'] / row['darts']['activation_bytes']
        tim = row['pcdarts']['step_time'] / row['darts']['step_time']
        cpu = row['pcdarts']['step_cpu_time'] / row['darts']['step_cpu_time']
        print(f'  {memory_format:13s} PC-DARTS(K={args.k}) / DARTS: memory ratio {mem:.3f} (target <= 0.35), '
              f'step-time ratio {tim:.3f} wall, {cpu:.3f} CPU'
              + (' (target <= 0.65)' if memory_format == 'channels_last' else ''), flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
