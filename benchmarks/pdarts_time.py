"""Wall time of a full P-DARTS search against a DARTS search of the same total epochs on the same data, in one run.

Both searches run through the package's strategies on NNI (supernet builds, every stage's fresh Trainer, validation
and the final derivation included), each in a fresh subprocess, one after the other, with the same width, batch,
data subset, weight recipe and thread count. The ratio is taken within this run only (the machines are noisy).

Sizes mirror the papers' depths at CPU scale: P-DARTS searches 5 -> 11 -> 17 cells with 8 -> 5 -> 3 ops per edge
(``epochs`` per stage, the first ``warmup`` weight-only, as 10 of 25 in the reference), DARTS searches 8 cells with
the 8 ops for 3 x ``epochs`` epochs (no warm-up, as in DARTS). ``digits`` (1x8x8, default) keeps it to minutes on
2 cores; ``cpu`` is the CLI's cpu preset shape (C=8, Fashion-MNIST 1x28x28, 3/4/5 vs 5 cells).

    python benchmarks/pdarts_time.py                    # digits
    python benchmarks/pdarts_time.py --size cpu --epochs 2 --warmup 1
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    'digits': dict(dataset='digits', width=4, subset=256, batch=32, pdarts_cells=(5, 11, 17), darts_cells=8),
    'cpu': dict(dataset='fashion-mnist', width=8, subset=2000, batch=64, pdarts_cells=(3, 4, 5), darts_cells=5),
}


def measure(config: str, size: str, epochs: int, warmup: int, threads: int) -> dict:
    """In a child process: build the space, evaluator and strategy; time ``initialize`` + ``run`` + export."""
    import logging

    import torch
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace

    from nni_darts_ext import DartsCellSpace, arch_to_genotype
    from nni_darts_ext.data import get_info
    from nni_darts_ext.evaluator import search_evaluator
    from nni_darts_ext.strategies.darts import DartsStrategy
    from nni_darts_ext.strategies.pdarts import PDartsStrategy

    for name in ('pytorch_lightning', 'lightning', 'nni'):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = SIZES[size]
    info = get_info(s['dataset'])
    stages = len(s['pdarts_cells'])
    total_epochs = stages * epochs
    if config == 'pdarts':
        cells = s['pdarts_cells'][0]
        strategy = PDartsStrategy(cells=s['pdarts_cells'], num_ops=(8, 5, 3), skip_dropout=(0.1, 0.4, 0.7),
                                  epochs_per_stage=epochs, warmup_epochs=warmup, max_skip=2)
    else:
        cells = s['darts_cells']
        strategy = DartsStrategy(order=1)
    space = DartsCellSpace(width=s['width'], num_cells=cells, in_channels=info.in_channels,
                           image_size=info.image_size, num_classes=info.num_classes)
    evaluator = search_evaluator(s['dataset'], batch_size=s['batch'], subset=s['subset'], max_epochs=total_epochs,
                                 enable_progress_bar=False, logger=False, enable_checkpointing=False,
                                 enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    strategy.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    strategy.run()
    arch = next(iter(strategy.list_models())).sample
    seconds = time.perf_counter() - start
    result = dict(config=config, size=size, seconds=seconds, epochs=total_epochs, threads=threads,
                  genotype=str(arch_to_genotype(arch)))
    if config == 'pdarts':
        result['stages'] = [dict(stage=r.stage, cells=r.supernet_cells, ops=r.num_ops, seconds=round(r.seconds, 1))
                            for r in strategy.result.stages]
        result['warmup_per_stage'] = warmup
        result['cells'] = list(s['pdarts_cells'])
    else:
        result['cells'] = cells
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', choices=sorted(SIZES), default='digits')
    parser.add_argument('--epochs', type=int, default=3, help='P-DARTS epochs per stage (DARTS: 3x)')
    parser.add_argument('--warmup', type=int, default=1, help='P-DARTS weight-only epochs per stage')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (1: fastest on a loaded 2-core box)')
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'pdarts_time.json'))
    parser.add_argument('--child', choices=['darts', 'pdarts'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print('RESULT ' + json.dumps(measure(args.child, args.size, args.epochs, args.warmup, args.threads)))
        return
    results = {}
    for config in ('darts', 'pdarts'):
        cmd = [sys.executable, __file__, '--child', config, '--size', args.size, '--epochs', str(args.epochs),
               '--warmup', str(args.warmup), '--threads', str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
        if proc.returncode or not lines:
            sys.exit(f'{config} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')
        results[config] = json.loads(lines[-1][len('RESULT '):])
        r = results[config]
        print(f"{config:7s} cells {r['cells']}: {r['epochs']} epochs in {r['seconds']:.1f} s"
              + (f"  stages {r['stages']}" if 'stages' in r else ''), flush=True)
    ratio = results['pdarts']['seconds'] / results['darts']['seconds']
    print(f'P-DARTS / DARTS wall time (same {results["darts"]["epochs"]} epochs, same data): {ratio:.2f}')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'size': args.size, 'sizes': SIZES[args.size], 'ratio': ratio, **results}, indent=2))
    print(f'written {out}')


if __name__ == '__main__':
    main()
