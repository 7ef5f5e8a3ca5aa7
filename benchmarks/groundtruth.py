"""Do the searches find good architectures? Every strategy against the ground-truth table (issue 19) and against
NNI's random search and regularised evolution at equal cost.

The table (``nni_darts_ext/groundtruth/nb201_fashion16.json.gz``) holds NNI's NAS-Bench-201 space at C=8, one cell
per stage, trained on 4,000 16x16 Fashion-MNIST images with one recipe, tested on the 10,000 test images
(``docs/groundtruth.md``). Here:

(a) each one-shot strategy searches that space on the table's training images (half for w, half for α) with one
    search recipe for all (``GroundTruthSearchRecipe``: the project's ``cpu``-preset rules), several seeds; for each
    search: the exported cell's ground-truth test accuracy, its percentile among the table's cells, its skip / none
    edges, the search's CPU seconds, and the ground truth of the cell it would have exported after every epoch;
(b) NNI's ``Random`` and ``RegularizedEvolution`` (population 10, tournament 3: NAS-Bench-201's REA setting) query
    the table through :class:`~nni_darts_ext.groundtruth.evaluator.TableEvaluator`, each query charged its cell's
    recorded training seconds, with the one-shot searches' median CPU seconds as budget; they pick by validation
    accuracy, and the ground truth of their pick is reported;
(c) the table's best and median cell.

A cell the table lacks (found, on a trajectory, or sampled by a baseline) is trained with the table's recipe (seed 0)
and kept in ``benchmarks/results/groundtruth_extra.json.gz`` (not part of the uniform sample: percentiles and the
median use the table's drawn cells only). Finished searches are kept in ``groundtruth_runs.jsonl``: a rerun (or one
killed midway) does only what is missing.

    python -m benchmarks groundtruth            # 3 seeds per strategy, 10 per baseline (~2-3 h on 2 cores)
    python -m benchmarks groundtruth --quick    # 1 seed per strategy, fewer epochs (<= 30 min)
    python benchmarks/groundtruth.py --strategies darts_order1 darts_order1+beta --seeds 3

Writes ``benchmarks/results/groundtruth.json``, ``groundtruth_distribution.png``, ``groundtruth_trajectories.png``.
Search CPU seconds are ``time.process_time`` of a one-thread process, as the table's training seconds.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ''):  # run as a script: this checkout's package, not an installed one (the venv may be shared)
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'benchmarks' / 'results'
FAITHFUL = ('darts_order1', 'darts_order2', 'pcdarts', 'pdarts')
#: search recipes (the same for every strategy; only the P-DARTS stages split it, as the cpu preset does)
PRESETS: Dict[str, Dict[str, Any]] = {
    'full': dict(epochs=6, seeds=3, baseline_seeds=10),
    'quick': dict(epochs=3, seeds=1, baseline_seeds=10),
    'smoke': dict(epochs=1, seeds=1, baseline_seeds=2, limit_train_batches=2),
}
# Options of issue 20, by key suffix: '+pt' perturbation-based selection (DARTS-PT), '+beta' β-decay
# (β-DARTS), '+rs' random smoothing (SDARTS-RS), '+exact' the exact Hessian-vector product.
OPTION_KWARGS: Dict[str, Dict[str, Any]] = {
    'pt': dict(select='perturbation'),
    'beta': dict(beta_decay=25.0),     # β-DARTS' final λ (Sunshine-Ye/Beta-DARTS: 50 * epoch / 100, 50 epochs)
    'rs': dict(smooth=0.3),            # SDARTS-RS' ε at the end of its ramp (0.03 -> 0.3)
    'exact': dict(hvp='exact'),
}


def _quiet() -> None:
    warnings.filterwarnings('ignore')
    for name in ('pytorch_lightning', 'lightning.pytorch', 'lightning', 'nni'):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_strategy(key: str, recipe: Any, images: int) -> Any:
    """The strategy object of ``key`` (``darts_order1``, ``pcdarts+beta``, ...) for the ground-truth space."""
    from nni_darts_ext import DartsStrategy, PcDartsStrategy, PDartsStrategy

    base, *options = key.split('+')
    extra: Dict[str, Any] = {}
    for option in options:
        if option not in OPTION_KWARGS:
            raise ValueError(f'unknown option {option!r} in {key!r}; allowed: {sorted(OPTION_KWARGS)}')
        extra.update(OPTION_KWARGS[option])
    common = dict(warmup_epochs=recipe.warmup_epochs, channels_last=False, **extra)
    if base in ('darts_order1', 'darts_order2'):
        return DartsStrategy(order=int(base[-1]), arc_learning_rate=recipe.arc_learning_rate('darts', images),
                             **common)
    if base == 'pcdarts':
        return PcDartsStrategy(k=recipe.pcdarts_k, arc_learning_rate=recipe.arc_learning_rate('pcdarts', images),
                               **common)
    if base == 'pdarts':
        # one cell per stage stays one (the table's network); ops per edge 5 -> 3 -> 2; every stage the others'
        # epochs (the cpu preset's rule: each stage as many α steps as the others' whole search)
        return PDartsStrategy(cells=None, num_ops=(5, 3, 2), epochs_per_stage=recipe.epochs,
                              arc_learning_rate=recipe.arc_learning_rate('pdarts', images), **common)
    raise ValueError(f'unknown strategy {base!r} in {key!r}; allowed: {list(FAITHFUL)}')


def run_search(key: str, seed: int, epochs: int, limit_train_batches: Optional[int] = None) -> Dict[str, Any]:
    """One one-shot search on the ground-truth space; returns the exported arch, the per-epoch exports and CPU
    seconds (ground truth is looked up afterwards, outside the timed part)."""
    import pytorch_lightning as pl
    import torch
    from nni.nas.experiment import NasExperiment

    from nni_darts_ext.groundtruth.recipe import load_data
    from nni_darts_ext.groundtruth.search import GroundTruthSearchRecipe, search_evaluator
    from nni_darts_ext.groundtruth.space import NasBench201Grey

    _quiet()
    torch.set_num_threads(1)
    data = load_data()
    recipe = GroundTruthSearchRecipe(epochs=epochs)
    trajectory: List[Dict[str, str]] = []

    class ExportEachEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            trajectory.append(dict(module.export()))

    pl.seed_everything(seed, workers=True)
    kwargs = {} if limit_train_batches is None else dict(limit_train_batches=limit_train_batches)
    evaluator = search_evaluator(data, recipe, seed, callbacks=[ExportEachEpoch()], **kwargs)
    strategy = build_strategy(key, recipe, len(data.train_x))
    cpu, wall = time.process_time(), time.perf_counter()
    exp = NasExperiment(NasBench201Grey(), evaluator, strategy)
    exp.run()
    arch = exp.export_top_models(formatter='dict')[0]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    exp.stop()
    return {'key': key, 'seed': seed, 'epochs': epochs, 'arch': {k: str(v) for k, v in arch.items()},
            'trajectory': trajectory, 'seconds': round(cpu, 2), 'wall_seconds': round(wall, 2)}


class GroundTruth:
    """The shipped table plus the cells trained on demand (kept in the extra file)."""

    def __init__(self, table_path: Path, extra_path: Path):
        from nni_darts_ext.groundtruth.table import GroundTruthTable

        #: the shipped table alone: the uniform sample that percentiles, the median and the noise ratios come from
        self.drawn_table = GroundTruthTable.load(table_path)
        self.drawn = set(self.drawn_table.cells)
        self.table = GroundTruthTable(self.drawn_table.cells.values(), self.drawn_table.meta)
        self.extra_path = extra_path
        if extra_path.exists():
            for cell in GroundTruthTable.load(extra_path).cells.values():
                self.table.cells.setdefault(cell.key, cell)
        self._data = None

    def record(self, arch: Dict[str, str]) -> Any:
        from nni_darts_ext.groundtruth.recipe import GroundTruthRecipe, load_data
        from nni_darts_ext.groundtruth.space import canonical_key

        if canonical_key(arch) not in self.table.cells:
            if self._data is None:
                self._data = load_data(GroundTruthRecipe(**self.table.meta['recipe']))
            self.table.query(arch, train_missing=True, seeds=(0,), data=self._data)
            self.save_extra()
        return self.table.query(arch)

    def save_extra(self) -> None:
        from nni_darts_ext.groundtruth.table import GroundTruthTable

        extra = GroundTruthTable([c for k, c in self.table.cells.items() if k not in self.drawn],
                                 meta={'recipe': self.table.meta['recipe'],
                                       'note': 'cells trained on demand by benchmarks/groundtruth.py (seed 0)'})
        extra.save(self.extra_path)

    def describe(self, arch: Dict[str, str]) -> Dict[str, Any]:
        rec = self.record(arch)
        ops = list(arch.values())
        return {'test_acc': rec.test_acc, 'percentile': round(self.drawn_table.percentile(rec.test_acc), 2),
                'skip_edges': ops.count('skip_connect'), 'none_edges': ops.count('none'), 'cell': rec.string}


def run_baselines(gt: GroundTruth, budget: float, seeds: Sequence[int]) -> Dict[str, Any]:
    from nni.nas.strategy import Random, RegularizedEvolution

    from nni_darts_ext.groundtruth.evaluator import TableEvaluator, run_multi_trial

    makers: Dict[str, Callable[[int], Any]] = {
        'random_search': lambda s: Random(seed=s),
        # NAS-Bench-201's REA: population 10, tournament (sample) size 3
        'regularized_evolution': lambda s: RegularizedEvolution(population_size=10, sample_size=3, seed=s),
    }
    out: Dict[str, Any] = {}
    for name, make in makers.items():
        runs = []
        for seed in seeds:
            evaluator = TableEvaluator(gt.table, train_missing=True, missing_seeds=(0,))
            run_multi_trial(make(seed), evaluator, budget_seconds=budget)
            gt.save_extra()
            best = evaluator.best_within(budget)
            run = {'seed': seed, 'trials': sum(t.elapsed <= budget for t in evaluator.trials)}
            if best is not None:  # None: the budget is shorter than any trial (the smoke preset), nothing found
                run.update(**gt.describe(best.arch), seconds=round(best.elapsed, 1))
            runs.append(run)
        found = [r for r in runs if 'test_acc' in r]
        out[name] = {'test_acc': [r['test_acc'] for r in found], 'percentile': [r['percentile'] for r in found],
                     'seconds': [budget] * len(runs), 'trials': [r['trials'] for r in runs],
                     'nothing_found': len(runs) - len(found), 'runs': runs}
    return out


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.4f}'
    return f'{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}'


def adoption(strategies: Dict[str, Any]) -> Dict[str, Any]:
    """Issue 20's rule: per faithful strategy, the variant (``key+option``) with the best mean ground-truth test
    accuracy is adopted only if it beats the faithful mean by more than the seed spread (the larger of the two
    standard deviations); otherwise the faithful key. The DARTS-space collapse check is recorded separately
    (``darts_space_check``) and must pass too before the cpu preset changes."""
    adopted: Dict[str, Any] = {}
    for base in FAITHFUL:
        if base not in strategies:
            continue
        faithful = strategies[base]['test_acc']
        best_key, best_margin = base, 0.0
        for key, s in strategies.items():
            if not key.startswith(base + '+') or len(s['test_acc']) < 2 or len(faithful) < 2:
                continue
            margin = statistics.fmean(s['test_acc']) - statistics.fmean(faithful)
            spread = max(statistics.stdev(s['test_acc']), statistics.stdev(faithful))
            if margin > spread and margin > best_margin:
                best_key, best_margin = key, margin
        adopted[base] = best_key
    return adopted


def table_markdown(result: Dict[str, Any]) -> str:
    """The README table: method | test accuracy | percentile | skip / none edges | search seconds."""
    rows = ['| method | test accuracy (mean ± std over seeds) | percentile | skip / none edges | search CPU s |',
            '|---|---|---|---|---|']
    order = sorted(result['strategies'], key=lambda k: (k.split('+')[0] not in FAITHFUL,
                                                         FAITHFUL.index(k.split('+')[0]) if k.split('+')[0] in FAITHFUL
                                                         else 0, '+' in k, k))
    for name in order:
        s = result['strategies'][name]
        rows.append(f"| {name} ({len(s['test_acc'])} seeds) | {_mean_std(s['test_acc'])} | "
                    f"{statistics.fmean(s['percentile']):.1f} | {statistics.fmean(s['skip_edges']):.1f} / "
                    f"{statistics.fmean(s['none_edges']):.1f} | {statistics.fmean(s['seconds']):.0f} |")
    for name, b in result['baselines'].items():
        percentile = f"{statistics.fmean(b['percentile']):.1f}" if b['percentile'] else 'n/a'
        rows.append(f"| {name} ({len(b['test_acc'])} seeds, NNI) | {_mean_std(b['test_acc'])} | "
                    f"{percentile} | | {b['seconds'][0]:.0f} (simulated) |")
    t = result['table']
    rows.append(f"| table's best cell | {t['best_acc']:.4f} | 100 | | |")
    rows.append(f"| table's median cell | {t['median_acc']:.4f} | 50 | | |")
    return '\n'.join(rows)


def pictures(result: Dict[str, Any], gt: GroundTruth, out_dir: Path) -> Dict[str, str]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    accs = gt.drawn_table.accuracies()
    # cells whose output is cut off from the input (none edges) sit at chance: counted, not drawn, so that the
    # histogram shows where the searches compete; the pictures show the faithful strategies (the README table all)
    chance = [a for a in accs if a < 0.5]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist([a for a in accs if a >= 0.5], bins=40, color='0.75',
            label=f'table: {len(accs)} cells ({len(chance)} at chance, not drawn)')
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    faithful = {k: v for k, v in result['strategies'].items() if '+' not in k}
    for i, (name, s) in enumerate({**faithful, **result['baselines']}.items()):
        for j, acc in enumerate(s['test_acc']):
            ax.axvline(acc, color=colours[i % len(colours)], lw=1.2, alpha=0.8, label=name if j == 0 else None)
    ax.set_xlabel('ground-truth test accuracy (mean over seeds)')
    ax.set_ylabel('cells')
    ax.set_yscale('log')
    ax.legend(fontsize=7, loc='upper left')
    ax.set_title('NAS-Bench-201 space (C=8, 1 cell/stage, Fashion-MNIST 16x16): table and found cells')
    fig.tight_layout()
    dist = out_dir / 'groundtruth_distribution.png'
    fig.savefig(dist, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, s) in enumerate(faithful.items()):
        for j, traj in enumerate(s['trajectory_acc']):
            ax.plot(range(1, len(traj) + 1), traj, marker='o', ms=3, color=colours[i % len(colours)], alpha=0.8,
                    label=name if j == 0 else None)
    ax.axhline(result['table']['best_acc'], color='k', ls='--', lw=1, label="table's best")
    ax.axhline(result['table']['median_acc'], color='k', ls=':', lw=1, label="table's median")
    ax.set_xlabel('epoch (P-DARTS: all stages in a row)')
    ax.set_ylabel('ground truth of the cell exported then')
    ax.legend(fontsize=7)
    fig.tight_layout()
    traj = out_dir / 'groundtruth_trajectories.png'
    fig.savefig(traj, dpi=110)
    plt.close(fig)
    from benchmarks._measure import shown_path  # relative inside the repository, absolute outside it (--out)
    return {'distribution': shown_path(dist), 'trajectories': shown_path(traj)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true')
    mode.add_argument('--smoke', action='store_true', help='seconds: every code path, values meaningless')
    parser.add_argument('--strategies', nargs='*', default=list(FAITHFUL),
                        help=f'strategy keys: {", ".join(FAITHFUL)}, each optionally with +pt, +beta, +rs, +exact')
    parser.add_argument('--seeds', type=int, default=None)
    parser.add_argument('--baseline-seeds', type=int, default=None)
    parser.add_argument('--no-baselines', action='store_true', help='only the one-shot searches')
    parser.add_argument('--table', default=None, help='table file (default: the shipped one)')
    parser.add_argument('--out', default=str(RESULTS))
    args = parser.parse_args(argv)
    from nni_darts_ext.groundtruth.table import DEFAULT_TABLE
    from benchmarks._measure import git_commit

    preset_name = 'smoke' if args.smoke else 'quick' if args.quick else 'full'
    preset = PRESETS[preset_name]
    seeds = range(args.seeds if args.seeds is not None else preset['seeds'])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt = GroundTruth(Path(args.table) if args.table else DEFAULT_TABLE, out_dir / 'groundtruth_extra.json.gz')
    runs_path = out_dir / 'groundtruth_runs.jsonl'
    from nni_darts_ext.rundir import read_jsonl
    done = {(r['key'], r['seed'], r['epochs']): r for r in read_jsonl(runs_path)}
    start = time.perf_counter()
    for key in args.strategies:
        for seed in seeds:
            if (key, seed, preset['epochs']) in done:
                continue
            print(f'groundtruth: {key} seed {seed} ({preset["epochs"]} epochs)...', flush=True)
            run = run_search(key, seed, preset['epochs'], preset.get('limit_train_batches'))
            done[(key, seed, preset['epochs'])] = run
            with runs_path.open('a') as f:
                f.write(json.dumps(run) + '\n')
    strategies: Dict[str, Any] = {}
    for key in args.strategies:
        runs = [done[(key, s, preset['epochs'])] for s in seeds]
        found = [gt.describe(r['arch']) for r in runs]
        strategies[key] = {
            'test_acc': [f['test_acc'] for f in found], 'percentile': [f['percentile'] for f in found],
            'skip_edges': [f['skip_edges'] for f in found], 'none_edges': [f['none_edges'] for f in found],
            'seconds': [r['seconds'] for r in runs], 'cells': [f['cell'] for f in found],
            'trajectory_acc': [[gt.record(a).test_acc for a in r['trajectory']] for r in runs]}
        print(f"groundtruth: {key}: test acc {strategies[key]['test_acc']}, percentile "
              f"{strategies[key]['percentile']}", flush=True)
    faithful_seconds = [s for k in args.strategies if '+' not in k for s in strategies[k]['seconds']]
    budget = statistics.median(faithful_seconds or [s for k in strategies for s in strategies[k]['seconds']])
    baselines = {} if args.no_baselines else run_baselines(
        gt, budget, range(args.baseline_seeds if args.baseline_seeds is not None else preset['baseline_seeds']))
    summary = gt.drawn_table.summary()
    result = {
        'table': {'cells': summary['cells'], 'seeds': summary['seeds'], 'noise_ratio': summary['noise_ratio'],
                  'noise_ratio_top10': summary['noise_ratio_top10'], 'best_acc': summary['best_acc'],
                  'best_cell': summary['best_cell'], 'median_acc': summary['median_acc'], 'recipe': summary['recipe'],
                  'extra_cells': len(gt.table) - len(gt.drawn)},
        'search_recipe': {'preset': preset_name, **preset},
        'budget_seconds': budget, 'strategies': strategies, 'baselines': baselines,
        'date': datetime.date.today().isoformat(), 'commit': git_commit(),
        'device': 'cpu (2 cores, one thread per search)', 'wall_seconds': round(time.perf_counter() - start, 1)}
    if not args.smoke:
        result['pictures'] = pictures(result, gt, out_dir) if baselines else {}
    name = 'groundtruth.json' if not args.smoke else 'groundtruth_smoke.json'
    path = out_dir / name
    if path.exists() and not args.smoke:  # keep the variants measured by earlier calls (issue 20)
        old = json.loads(path.read_text())
        result['strategies'] = {**old.get('strategies', {}), **result['strategies']}
        if not baselines:
            result['baselines'], result['budget_seconds'] = old.get('baselines', {}), old.get('budget_seconds')
            result['pictures'] = old.get('pictures', {})
    result['adopted'] = adoption(result['strategies'])
    path.write_text(json.dumps(result, indent=1))
    print(table_markdown(result) if result['baselines'] else json.dumps(strategies, indent=1))
    print(f'groundtruth: wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
