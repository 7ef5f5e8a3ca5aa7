"""Search-step throughput (images/s) of one search on 1 and on 2 processes (Lightning DDP, gloo on CPU), and the ratio.

Each configuration is a real ``run_search`` (DARTS, first order by default) in a fresh process tree; a callback times
the training steps after ``--warmup`` untimed ones (per step: one α step on the architecture batch and one weight
step on the training batch, so an "image" here is one training plus one architecture image). With 2 processes each
rank gets the same per-process batch, so the global batch doubles (weak scaling). Each process uses one torch
thread: on a 2-core machine 2 processes can at best double the throughput, and less when other jobs share the cores.

    python benchmarks/ddp_throughput.py [--order 2] [--steps 4] [--batch 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    import pytorch_lightning as pl
    import torch
    torch.set_num_threads(1)
    from nni_darts_ext.search import SearchSettings, run_search

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.world_size > 1:
                trainer.strategy.barrier()
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    settings = SearchSettings(
        strategy='darts', order=args.order, preset='tiny', dataset='digits', width=args.width, cells=3,
        subset=4 * args.batch * (args.steps + args.warmup) * args.devices, batch_size=args.batch, epochs=1,
        warmup_epochs=0, limit_train_batches=args.steps + args.warmup, progress_bar=False, augment=False,
        accelerator='cpu', devices=args.devices, strategy_backend='ddp' if args.devices > 1 else None,
        out=args.out)
    run_search(settings, callbacks=[timer])
    from nni_darts_ext.oneshot.distributed import is_rank_zero
    if is_rank_zero():
        timed = timer.times[args.warmup:]
        images = args.batch * args.devices * len(timed)
        Path(args.result).write_text(json.dumps({'devices': args.devices, 'seconds': sum(timed), 'steps': len(timed),
                                                 'images_per_s': images / sum(timed)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--order', type=int, default=1, choices=(1, 2))
    p.add_argument('--steps', type=int, default=4)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--batch', type=int, default=16, help='images per process and step')
    p.add_argument('--width', type=int, default=4)
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--devices', type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument('--out', default=None, help=argparse.SUPPRESS)
    p.add_argument('--result', default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, 2):
            result = Path(tmp) / f'result{devices}.json'
            cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', '--devices', str(devices),
                   '--order', str(args.order), '--steps', str(args.steps), '--warmup', str(args.warmup),
                   '--batch', str(args.batch), '--width', str(args.width), '--out', str(Path(tmp) / f'out{devices}'),
                   '--result', str(result)]
            subprocess.run(cmd, check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results[devices] = json.loads(result.read_text())
    one, two = results[1]['images_per_s'], results[2]['images_per_s']
    print(f'DARTS order {args.order}, C={args.width}, 3 cells, digits, batch {args.batch} per process, '
          f'{args.steps} timed steps:')
    print(f'  1 process : {one:8.1f} images/s')
    print(f'  2 processes: {two:8.1f} images/s')
    print(f'  ratio 2/1 : {two / one:.2f} (os.cpu_count() = {os.cpu_count()})')


if __name__ == '__main__':
    main()
