"""Per-step time of DartsStrategy (order 1 and 2) against NNI 3.0's built-in DARTS, measured in one run.

Every configuration runs the real search step (the strategy's Lightning module driven by a Lightning Trainer) in a
fresh subprocess, on the same space, batch and data, one after the other; the first steps are warm-up and not
timed. Ratios are taken between configurations of this run only (the machines are noisy: no absolute targets).

Sizes: ``reference`` = the DARTS search supernet (C=16, 8 cells, batch 64, 3x32x32 random images: CIFAR-10 is
not installable offline); ``cpu`` = the CPU preset (C=8, 5 cells, batch 64, Fashion-MNIST 1x28x28).

    python benchmarks/darts_step_time.py --size both --steps 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
    """Run in a child process: time `steps` search steps after `warmup` untimed ones."""
    import pytorch_lightning as pl
    import torch
    from nni.nas.evaluator.pytorch import DataLoader
    from nni.nas.strategy import DARTS

    from nni_darts_ext import DartsCellSpace, DartsStrategy
    from nni_darts_ext.evaluator import DartsClassification

    s, c = SIZES[size], CONFIGS[config]
    torch.manual_seed(0)
    n = s['batch'] * (steps + warmup)
    if s['dataset']:
        from nni_darts_ext.data import search_split
        train_set, val_set = search_split(s['dataset'], subset=2 * n, seed=0)
    else:
        x = torch.randn(2 * n, s['channels'], s['image'], s['image'])
        y = torch.randint(0, 10, (2 * n,))
        train_set = torch.utils.data.TensorDataset(x[:n], y[:n])
        val_set = torch.utils.data.TensorDataset(x[n:], y[n:])
    space = DartsCellSpace(width=s['width'], num_cells=s['cells'], in_channels=s['channels'], image_size=s['image'])
    times = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self.start)

    evaluator = DartsClassification(
        10, train_dataloaders=DataLoader(train_set, batch_size=s['batch']),
        val_dataloaders=DataLoader(val_set, batch_size=s['batch']), max_epochs=1,
        limit_train_batches=steps + warmup, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()])
    if c['strategy'] == 'nni':
        strategy = DARTS(gradient_clip_val=5.0)
    else:
        strategy = DartsStrategy(order=c['order'], channels_last=c['channels_last'])
    strategy.mutate_model(space)
    lightning = strategy.mutate_evaluator(evaluator)
    lightning.evaluate(space)
    timed = times[warmup:]
    return {'size': size, 'config': config, 'step_seconds': statistics.median(timed), 'all': times}


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
