"""PC-DARTS (K=4) against DARTS (first order): activation memory and time of the search step.

Setting: the DARTS reference search network (``DartsCellSpace(width=16, num_cells=8)``, 3x32x32 inputs, 10 classes),
batch 64 for both the weight and the architecture batch, the DARTS SGD evaluator, ``warmup_epochs=0`` so that every
step is a full search step. The step is the real one: ``NasExperiment(space, evaluator, strategy).run()`` with a
Lightning ``Trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=0)``, i.e. ``DartsSearchModule.
training_step`` = ``arch_step`` (first order: forward + backward on the architecture batch, Adam on α [and β]) +
``weight_step`` (forward + backward on the weight batch, SGD). Random tensors stand in for CIFAR-10 (offline
machine; neither memory nor time depends on pixel values); ``num_workers=0`` keeps all memory in one process.

How memory is measured (``benchmarks/_measure.py``, shared with ``python -m benchmarks``): every configuration runs
in a **fresh subprocess**. A Lightning callback, at
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

Targets of this project: memory ratio PC/DARTS <= 0.35; time ratio <= 0.65 in ``channels_last``.

Usage: ``python benchmarks/pcdarts_memory.py [--steps 4] [--formats channels_last contiguous] [--json out.json]``
(several minutes on 2 CPU cores; DARTS needs ~9 GB of RAM).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import measure  # noqa: E402

CHANNELS = 3


def child(strategy_name: str, memory_format: str, steps: int, k: int, threads: int, width: int = 16, cells: int = 8,
          batch: int = 64, image: int = 32) -> dict:
    """One configuration in this process, measured by ``benchmarks._measure.measure`` (step 1 is the warm-up)."""
    spec = dict(strategy=strategy_name, order=1, k=k, channels_last=memory_format == 'channels_last', width=width,
                cells=cells, batch=batch, channels=CHANNELS, image=image, steps=max(steps - 1, 0), warmup=1,
                threads=threads)
    result = measure(spec)
    fit = result['fits'][0]
    return {'strategy': strategy_name, 'memory_format': memory_format, 'k': k if strategy_name == 'pcdarts' else None,
            'baseline_rss': fit['baseline'], 'peak_rss': fit['peak'], 'activation_bytes': fit['activation_bytes'],
            'peak_reset': fit['peak_reset'], 'step_times': fit['times'], 'step_cpu_times': fit['cpu_times'],
            'step_time': fit['step_time'], 'step_cpu_time': fit['step_cpu_time'], 'threads': threads,
            'loadavg_at_end': result['loadavg']}


def run_config(strategy_name: str, memory_format: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), '--child', strategy_name, memory_format,
           '--steps', str(args.steps), '--k', str(args.k), '--threads', str(args.threads), '--width', str(args.width),
           '--cells', str(args.cells), '--batch', str(args.batch), '--image', str(args.image)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = [text for text in out.stdout.splitlines() if text.startswith('RESULT ')][-1]
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
        result = child(args.child[0], args.child[1], args.steps, args.k, args.threads, args.width, args.cells,
                       args.batch, args.image)
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
