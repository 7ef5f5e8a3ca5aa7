"""Per-step time of DartsStrategy (order 1 and 2) against NNI 3.0's built-in DARTS, measured in one run.

Superseded by ``python -m benchmarks speed`` (interleaved repeats); kept for its two sizes. Every configuration
runs the real search step (the strategy's Lightning module driven by a Lightning Trainer) in a
fresh subprocess, on the same space, batch and data, one after the other; the first steps are warm-up and not
timed. Ratios are taken between configurations of this run only (the machines are noisy: no absolute targets).

Sizes: ``reference`` = the DARTS search supernet (C=16, 8 cells, batch 64, 3x32x32 random images: CIFAR-10 is
not installable offline); ``cpu`` = the CPU preset (C=8, 5 cells, batch 64, Fashion-MNIST 1x28x28).

    python benchmarks/darts_step_time.py --size both --steps 3
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _measure  # noqa: E402

CONFIGS = {
    'nni_darts': dict(strategy='nni', order=1, channels_last=False),
    'ours_order1_contiguous': dict(strategy='ours', order=1, channels_last=False),
    'ours_order1': dict(strategy='ours', order=1, channels_last=True),
    'ours_order2': dict(strategy='ours', order=2, channels_last=True),
}
SIZES = {
    'reference': dict(width=16, cells=8, batch=64, channels=3, image=32, dataset=None),
    'cpu': dict(width=8, cells=5, batch=64, channels=1, image=28, dataset='fashion-mnist'),
}


def measure(size: str, config: str, steps: int, warmup: int) -> dict:
    """Run in a child process: time ``steps`` search steps after ``warmup`` untimed ones (``benchmarks._measure``)."""
    s, c = SIZES[size], CONFIGS[config]
    spec = dict(strategy='nni' if c['strategy'] == 'nni' else 'darts', order=c['order'],
                channels_last=c['channels_last'], width=s['width'], cells=s['cells'], batch=s['batch'],
                channels=s['channels'], image=s['image'], dataset=s['dataset'], steps=steps, warmup=warmup)
    fit = _measure.measure(spec)['fits'][0]
    return {'size': size, 'config': config, 'step_seconds': fit['step_time'], 'all': fit['times']}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', choices=[*SIZES, 'both'], default='both')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--child', nargs=2, metavar=('SIZE', 'CONFIG'), help=argparse.SUPPRESS)
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'darts_step_time.json'))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.steps, args.warmup)))
        return
    results = {}
    for size in (SIZES if args.size == 'both' else [args.size]):
        results[size] = {}
        for config in CONFIGS:
            proc = subprocess.run([sys.executable, __file__, '--child', size, config, '--steps', str(args.steps),
                                   '--warmup', str(args.warmup)], capture_output=True, text=True, check=True)
            results[size][config] = json.loads(proc.stdout.strip().splitlines()[-1])['step_seconds']
            print(f'{size:9s} {config:24s} {results[size][config]:7.2f} s/step', flush=True)
        r = results[size]
        r['ratio_order1_vs_nni'] = r['ours_order1'] / r['nni_darts']
        r['ratio_order1_contiguous_vs_nni'] = r['ours_order1_contiguous'] / r['nni_darts']
        r['ratio_order2_vs_order1'] = r['ours_order2'] / r['ours_order1']
        print(f'{size}: order1 / NNI DARTS = {r["ratio_order1_vs_nni"]:.2f} (target <= 0.6); '
              f'order1 contiguous / NNI = {r["ratio_order1_contiguous_vs_nni"]:.2f}; '
              f'order2 / order1 = {r["ratio_order2_vs_order1"]:.2f} (target <= 2.7)', flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
