"""Do the searches find better cells than random sampling? (Yang et al., ICLR 2020: report the relative
improvement over random cells of the same space; DARTS paper: random search 3.29 % vs DARTS 2.76 % on CIFAR-10.)

On Fashion-MNIST, every cell below is retrained with ONE recipe (same width, cells, epochs, data, seeds) and tested
on the 10,000 test images, which no search sees (searches use halves of the training set):

(a) the cells found by DARTS order 1, order 2, PC-DARTS and P-DARTS (the ``search`` preset, >= 2 search seeds each);
(b) cells sampled uniformly from the same space by NNI's own ``space.random()`` (every edge's op without ``none``,
    two distinct inputs per node);
(c) the published DARTS_V2, PDARTS and PC_DARTS_CIFAR cells.

Before comparing it measures the recipe's noise (one cell retrained with 3 seeds) against the spread between random
cells, and, because short recipes favour bigger cells, reports each found cell's residual over a least-squares fit of
accuracy on log(parameters) of the random cells, and an accuracy-against-parameters scatter plot.

    python benchmarks/quality.py --quick        # <= 60 min on 2 CPU cores (the README table)
    python benchmarks/quality.py --full         # GPU-sized (reference-like search epochs, longer retraining)
    python benchmarks/quality.py --smoke        # seconds (tests): digits, tiny sizes, every field written

Writes ``benchmarks/results/quality.json`` (``--out``), ``quality_groups.png`` and ``quality_scatter.png``, and
prints the table. Jobs run in ``--workers`` processes of one thread each (small tensors: two one-thread processes
do more work per second on 2 cores than one two-thread process).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

RESULTS = Path(__file__).resolve().parent / 'results'
STRATEGIES = {  # group name -> search settings
    'darts_order1': dict(strategy='darts', order=1),
    'darts_order2': dict(strategy='darts', order=2),
    'pcdarts': dict(strategy='pcdarts', order=1),
    'pdarts': dict(strategy='pdarts', order=1),
}
PUBLISHED = ('DARTS_V2', 'PDARTS', 'PC_DARTS_CIFAR')

# One retraining recipe for every cell of a preset (never changed per group).
PRESETS: Dict[str, Dict[str, Any]] = {
    # 2 CPU cores, <= 60 min: the searches of the README (`search --preset cpu`), retraining C=8, 5 cells,
    # 3 epochs on 3,000 images (DARTS' evaluation recipe otherwise: SGD 0.025 cosine, aux 0.4, drop-path 0.2).
    'quick': dict(dataset='fashion-mnist', search=dict(preset='cpu'), search_seeds=(0, 1), random_cells=8,
                  retrain=dict(preset='small', epochs=3, subset=3000, batch_size=64), retrain_seeds=(0, 1),
                  noise_seeds=(0, 1, 2), workers=2),
    # A GPU machine: longer searches and retraining, more random cells.
    'full': dict(dataset='fashion-mnist', search=dict(preset='cpu', epochs=15, subset=20000, batch_size=64),
                 search_seeds=(0, 1, 2), random_cells=16,
                 retrain=dict(preset='small', width=16, cells=8, epochs=20, subset=None, batch_size=96),
                 retrain_seeds=(0, 1), noise_seeds=(0, 1, 2), workers=1),
    # Seconds: the code path of every field, on digits.
    'smoke': dict(dataset='digits', search=dict(preset='tiny', subset=64, width=4, cells=3, limit_train_batches=1),
                  search_seeds=(0, 1), random_cells=2,
                  retrain=dict(preset='tiny', width=4, subset=64, limit_train_batches=1), retrain_seeds=(0,),
                  noise_seeds=(0, 1, 2), workers=0),
}


# --- jobs (run in worker processes) ------------------------------------------------------------------------------
def _quiet_worker(threads: int) -> None:
    import logging
    import warnings
    import torch
    warnings.filterwarnings('ignore')
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR)
    logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)
    torch.set_num_threads(threads)


def search_job(group: str, seed: int, preset: Dict[str, Any], out: str, threads: int) -> Dict[str, Any]:
    """Run one search; returns its arch, search time and how decided α ended."""
    _quiet_worker(threads)
    from nni_darts_ext.search import SearchSettings, run_search
    settings = SearchSettings(**STRATEGIES[group], **preset['search'], dataset=preset['dataset'], seed=seed,
                              out=out, progress_bar=False)
    result = run_search(settings)
    decision = {cell: {k: v for k, v in s.items() if k != 'margins'} for cell, s in result.extra['decision'].items()}
    return {'group': group, 'seed': seed, 'arch': result.arch, 'genotype': str(result.genotype),
            'search_seconds': round(result.seconds, 1), 'supernet_val_acc': result.val_acc, 'decision': decision}


def retrain_job(arch: Any, seed: int, preset: Dict[str, Any], out: str, threads: int) -> Dict[str, Any]:
    """Retrain one cell with the preset's recipe and one seed; test accuracy on the whole test set."""
    _quiet_worker(threads)
    from nni_darts_ext.retrain import retrain
    recipe = dict(preset['retrain'])
    result = retrain(arch, dataset=preset['dataset'], out=out, preset=recipe.pop('preset'), seed=seed, resume=False,
                     plots=False, **recipe)
    return {'acc': result.test_acc, 'params': result.params, 'seconds': round(result.train_seconds_total, 1)}


def random_archs(count: int, dataset: str, seed: int = 0) -> List[Dict[str, Any]]:
    """``count`` archs drawn uniformly by NNI's ``space.random()`` from the search space without ``none``."""
    import numpy as np
    from nni_darts_ext import DartsCellSpace
    from nni_darts_ext.data import get_info
    from nni_darts_ext.space.ops import DARTS_OPS
    info = get_info(dataset)
    space = DartsCellSpace(width=4, num_cells=3, in_channels=info.in_channels, image_size=8,
                           num_classes=info.num_classes, op_candidates=[op for op in DARTS_OPS if op != 'none'])
    state = np.random.RandomState(seed)
    archs = []
    for _ in range(count):
        sample: Dict[str, Any] = {}
        space.random(memo=sample, random_state=state)
        archs.append(sample)
    return archs


# --- statistics ----------------------------------------------------------------------------------------------------
def _mean(xs: List[float]) -> Optional[float]:
    return statistics.fmean(xs) if xs else None


def _std(xs: List[float]) -> Optional[float]:
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def log_param_fit(points: List[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """Least-squares ``acc = a + b * ln(params)`` over points (the random cells)."""
    xs = [math.log(p['params']) for p in points]
    ys = [p['acc'] for p in points]
    if len(xs) < 2 or max(xs) == min(xs):
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {'intercept': my - b * mx, 'slope_per_log_param': b}


def summarise(found: Dict[str, List[Dict[str, Any]]], random: List[Dict[str, Any]],
              published: Dict[str, Dict[str, Any]], noise: Dict[str, Any]) -> Dict[str, Any]:
    random_accs = [r['acc'] for r in random]
    median = statistics.median(random_accs) if random_accs else None
    fit = log_param_fit(random)
    groups = {}
    for group, runs in found.items():
        accs = [r['acc'] for r in runs]
        residuals = [r['acc'] - (fit['intercept'] + fit['slope_per_log_param'] * math.log(r['params']))
                     for r in runs] if fit else []
        for r, res in zip(runs, residuals):
            r['residual_vs_random_fit'] = res
        mean = _mean(accs)
        groups[group] = {
            'acc_mean': mean, 'acc_std': _std(accs), 'params_mean': _mean([r['params'] for r in runs]),
            'search_seconds_mean': _mean([r['search_seconds'] for r in runs]),
            'relative_improvement_pct': None if mean is None or not median else 100 * (mean - median) / median,
            'beats_random_median': None if mean is None or median is None else mean > median,
            'residual_mean': _mean(residuals)}
    groups['random'] = {'acc_mean': _mean(random_accs), 'acc_std': _std(random_accs),
                        'params_mean': _mean([r['params'] for r in random]), 'acc_median': median}
    for name, p in published.items():
        groups[name] = {'acc_mean': p['acc'], 'params_mean': p['params']}
    between = _std(random_accs)
    return {'groups': groups, 'random_median_acc': median, 'random_fit': fit,
            'noise': {**noise, 'between_random_cells_std': between,
                      'seed_std_over_between_cell_std': (noise['seed_std'] / between) if between else None}}


# --- plots -----------------------------------------------------------------------------------------------------------
def plot(data: Dict[str, Any], out_dir: Path) -> Dict[str, str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    files = {}
    groups = [*data['found'], 'random', *data['published']]
    points = {g: [r['acc'] for r in data['found'][g]] for g in data['found']}
    points['random'] = [r['acc'] for r in data['random']]
    points.update({g: [p['acc']] for g, p in data['published'].items()})
    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        ys = points[g]
        ax.scatter([i + 0.08 * (k - (len(ys) - 1) / 2) for k in range(len(ys))], ys, s=18)
        if len(ys) > 1:
            ax.hlines(statistics.fmean(ys), i - 0.3, i + 0.3, colors='black')
    if data['random_median_acc'] is not None:
        ax.axhline(data['random_median_acc'], ls='--', color='grey', lw=0.8, label='random median')
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(groups)), groups, rotation=25, ha='right', fontsize=8)
    ax.set_ylabel('test accuracy')
    ax.set_title(f"{data['dataset']}: retrained cells by group ({data['preset']} preset)", fontsize=10)
    fig.tight_layout()
    files['groups'] = str(out_dir / 'quality_groups.png')
    fig.savefig(files['groups'], dpi=110)

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter([r['params'] for r in data['random']], points['random'], label='random', color='grey')
    for g in data['found']:
        ax.scatter([r['params'] for r in data['found'][g]], points[g], label=g, marker='^')
    for g, p in data['published'].items():
        ax.scatter([p['params']], [p['acc']], label=g, marker='s')
    fit = data['summary']['random_fit']
    if fit:
        xs = sorted(r['params'] for r in data['random'] + [r for g in data['found'].values() for r in g])
        ax.plot(xs, [fit['intercept'] + fit['slope_per_log_param'] * math.log(x) for x in xs], 'k--', lw=0.8,
                label='fit on random cells')
    ax.set_xscale('log')
    ax.set_xlabel('parameters (retrained network)')
    ax.set_ylabel('test accuracy')
    ax.legend(fontsize=7)
    fig.tight_layout()
    files['scatter'] = str(out_dir / 'quality_scatter.png')
    fig.savefig(files['scatter'], dpi=110)
    return files


def table(data: Dict[str, Any]) -> str:
    g = data['summary']['groups']
    lines = ['| group | cells | test acc (mean ± std) | params | search s | RI vs random median '
             '| residual vs size fit |',
             '|---|---|---|---|---|---|---|']

    def fmt(x, spec='.4f'):
        return 'n/a' if x is None else format(x, spec)
    for name, runs in data['found'].items():
        s = g[name]
        lines.append(f"| {name} | {len(runs)} | {fmt(s['acc_mean'])} ± {fmt(s['acc_std'])} | "
                     f"{fmt(s['params_mean'], ',.0f')} | {fmt(s['search_seconds_mean'], '.0f')} | "
                     f"{fmt(s['relative_improvement_pct'], '+.2f')} % | {fmt(s['residual_mean'], '+.4f')} |")
    s = g['random']
    lines.append(f"| random (median {fmt(s['acc_median'])}) | {len(data['random'])} | {fmt(s['acc_mean'])} ± "
                 f"{fmt(s['acc_std'])} | {fmt(s['params_mean'], ',.0f')} | – | 0 | – |")
    for name in data['published']:
        s = g[name]
        lines.append(f"| {name} (published) | 1 | {fmt(s['acc_mean'])} | {fmt(s['params_mean'], ',.0f')} | – | – | – |")
    n = data['summary']['noise']
    lines.append('')
    lines.append(f"Recipe noise: one cell retrained with {len(n['accs'])} seeds, std {fmt(n['seed_std'])}; std between "
                 f"random cells {fmt(n['between_random_cells_std'])} "
                 f"(ratio {fmt(n['seed_std_over_between_cell_std'], '.2f')}). "
                 f"{data['device']}, {data['date']}, {data['wall_seconds'] / 60:.1f} min.")
    return '\n'.join(lines)


# --- driver ----------------------------------------------------------------------------------------------------------
def run(preset_name: str, out: Path, runs_dir: Path, workers: Optional[int] = None) -> Dict[str, Any]:
    preset = PRESETS[preset_name]
    workers = preset['workers'] if workers is None else workers
    threads = 1 if workers else max(1, os.cpu_count() or 1)
    start = time.time()
    runs_dir.mkdir(parents=True, exist_ok=True)
    if workers:
        pool: Any = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context('spawn'))
    else:
        pool = _InlineExecutor()
    futures: Dict[Any, Any] = {}

    def submit(kind: str, key: Any, fn: Any, *args: Any) -> None:
        futures[pool.submit(fn, *args)] = (kind, key)

    # longest first: second-order searches, then the other searches, then the retraining of known cells
    order = sorted(STRATEGIES, key=lambda g: g != 'darts_order2')
    for group in order:
        for seed in preset['search_seeds']:
            submit('search', (group, seed), search_job, group, seed, preset,
                   str(runs_dir / f'search_{group}_s{seed}'), threads)
    randoms = random_archs(preset['random_cells'], preset['dataset'])
    cells: Dict[Any, Any] = {('random', i): arch for i, arch in enumerate(randoms)}
    cells.update({('published', name): name for name in PUBLISHED})
    for key, arch in cells.items():
        seeds = preset['noise_seeds'] if key == ('published', 'DARTS_V2') else preset['retrain_seeds']
        for seed in seeds:
            submit('retrain', (*key, seed), retrain_job, arch, seed, preset,
                   str(runs_dir / f'retrain_{key[0]}_{key[1]}_s{seed}'), threads)
    searches: Dict[Any, Dict[str, Any]] = {}
    retrains: Dict[Any, List[Dict[str, Any]]] = {}
    while futures:
        done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
        for future in done:
            kind, key = futures.pop(future)
            result = future.result()
            if kind == 'search':
                searches[key] = result
                print(f'[{time.time() - start:6.0f} s] search {key}: {result["search_seconds"]:.0f} s, '
                      f'{result["genotype"]}', flush=True)
                for seed in preset['retrain_seeds']:
                    submit('retrain', ('found', key, seed), retrain_job, result['arch'], seed, preset,
                           str(runs_dir / f'retrain_found_{key[0]}_s{key[1]}_r{seed}'), threads)
            else:
                retrains.setdefault(key[:-1], []).append({**result, 'seed': key[-1]})
                print(f'[{time.time() - start:6.0f} s] retrain {key}: acc {result["acc"]:.4f}, '
                      f'{result["params"]:,} params', flush=True)
    pool.shutdown()

    def cell_result(key: Any) -> Dict[str, Any]:
        runs = retrains[key]
        return {'acc': statistics.fmean(r['acc'] for r in runs), 'params': runs[0]['params'],
                'retrain_accs': [r['acc'] for r in runs], 'retrain_seeds': [r['seed'] for r in runs]}

    found = {group: [{'seed': seed, **cell_result(('found', (group, seed))),
                      'search_seconds': searches[(group, seed)]['search_seconds'],
                      'supernet_val_acc': searches[(group, seed)]['supernet_val_acc'],
                      'decision': searches[(group, seed)]['decision'],
                      'genotype': searches[(group, seed)]['genotype']}
                     for seed in preset['search_seeds']] for group in STRATEGIES}
    random = [{**cell_result(('random', i)), 'arch': arch} for i, arch in enumerate(randoms)]
    published = {name: cell_result(('published', name)) for name in PUBLISHED}
    noise_runs = retrains[('published', 'DARTS_V2')]
    noise_accs = [r['acc'] for r in noise_runs]
    noise = {'cell': 'DARTS_V2', 'accs': noise_accs, 'seed_std': _std(noise_accs)}
    # the published DARTS_V2 row uses the same retrain seeds as every other cell (the extra seeds measure noise)
    published['DARTS_V2'] = {**published['DARTS_V2'],
                             'acc': statistics.fmean(r['acc'] for r in noise_runs
                                                     if r['seed'] in preset['retrain_seeds'])}
    import torch

    from benchmarks._measure import git_commit, shown_path
    data = {
        'preset': preset_name, 'dataset': preset['dataset'], 'recipe': {k: v for k, v in preset.items()},
        'found': found, 'random': random, 'published': published, 'random_median_acc': None,
        'device': f'cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores'
                  + (f'; {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''),
        'date': datetime.date.today().isoformat(), 'wall_seconds': round(time.time() - start, 1),
        'workers': workers, 'commit': git_commit()}
    data['summary'] = summarise(found, random, published, noise)
    data['random_median_acc'] = data['summary']['random_median_acc']
    out.parent.mkdir(parents=True, exist_ok=True)
    data['files'] = {name: shown_path(path) for name, path in plot(data, out.parent).items()}
    data['table'] = table(data)
    tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, out)
    return data


class _InlineExecutor:
    """The ``Executor`` interface run in this process (``--workers 0``: tests, debugging)."""

    def submit(self, fn: Any, *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 -- surfaced by future.result()
            future.set_exception(err)
        return future

    def shutdown(self) -> None:
        pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    which = parser.add_mutually_exclusive_group()
    for name in PRESETS:
        which.add_argument(f'--{name}', dest='preset', action='store_const', const=name)
    parser.add_argument('--out', type=Path, default=RESULTS / 'quality.json')
    parser.add_argument('--runs-dir', type=Path, default=Path('runs/quality'), help='search/retrain folders')
    parser.add_argument('--workers', type=int, default=None, help='processes (0: in this process)')
    args = parser.parse_args(argv)
    data = run(args.preset or 'quick', args.out, args.runs_dir, args.workers)
    print(data['table'])
    print(f"wrote {args.out} and {', '.join(data['files'].values())}")
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
