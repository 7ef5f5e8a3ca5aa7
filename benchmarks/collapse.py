"""Does a strategy collapse in the DARTS space? (issue 20, points 5 and 7: an option is adopted only if it "does
not collapse in the DARTS space".)

For each strategy (DARTS order 1, DARTS order 2, PC-DARTS, P-DARTS) x option (faithful, ``+pt`` perturbation
selection, ``+beta`` β-decay, ``+rs`` random smoothing; the options' values are the ground-truth benchmark's
``OPTION_KWARGS``, the same for every strategy) x 2 seeds, one real search in the DARTS cell space (8 ops, 4
nodes, 2 inputs per node: 8 edges per derived cell) through the library's ``run_search(SearchSettings(...))``.
In the exported normal and reduce cells it counts the parameter-free edges: ``skip_connect``, ``max_pool_3x3``,
``avg_pool_3x3`` and ``none``.

Collapse rule (per run): the derived NORMAL cell has >= 6 of its 8 edges parameter-free (``COLLAPSE_MIN``). That
is the failure the papers describe (DARTS' skip-connect-dominated normal cells) and the one our earlier quality
benchmark saw as PC-DARTS' pool-only cells. A variant is flagged when any of its seeds collapses; the table also
gives the mean parameter-free count, so a drift towards collapse shows before the rule fires.

Size (``full``): the ``tiny`` preset (digits 8x8, C=8, 3 cells; P-DARTS 3 -> 4 -> 5 cells, 8 -> 5 -> 3 ops) with
512 images (256 for w, 256 for α, batch 32: 8 steps per epoch) and 6 epochs (2 weight-only; P-DARTS: 6 per
stage), so that α trains for 32 steps (P-DARTS 32 per stage) and the cells are decided (``decision`` per run;
the presets' α-lr scaling applies). One thread; the 32 searches took 29 CPU minutes on a shared 2-core machine
(2026-12-06: 1,741 s, of which 1,074 s the eight ``+pt`` searches, whose perturbation selection costs 90-170 s
at the library's defaults ``select_batches=10``, ``select_tune_steps=10``; the others 15-48 s each; the ``cpu``
preset would take hours). ``--smoke``: seconds, 1 seed, 1 batch per epoch (values meaningless).

β-decay keeps α near uniform by design, so its searches end "undecided" (``decision``) at this size: their cells
are closer to random draws than the others'.

    python benchmarks/collapse.py            # 32 searches, ~30 CPU min
    python benchmarks/collapse.py --smoke    # seconds (tests)

Writes ``benchmarks/results/collapse.json`` (``--out``) and prints the markdown table. Finished searches are kept
in ``collapse_runs.jsonl`` next to it (keyed by variant, seed and size): a rerun does only what is missing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

if __package__ in (None, ''):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import device_name, git_commit, shown_path  # noqa: E402
from benchmarks.groundtruth import OPTION_KWARGS  # noqa: E402
from nni_darts_ext.rundir import read_jsonl  # noqa: E402
from benchmarks.quality import STRATEGIES, _quiet_worker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / 'results'
OPTIONS = ('faithful', 'pt', 'beta', 'rs')
PARAMETER_FREE = ('skip_connect', 'max_pool_3x3', 'avg_pool_3x3', 'none')
COLLAPSE_MIN = 6  # of the normal cell's 8 edges
PRESETS: Dict[str, Dict[str, Any]] = {
    'full': dict(search=dict(preset='tiny', subset=512, epochs=6, warmup_epochs=2), seeds=(0, 1)),
    'smoke': dict(search=dict(preset='tiny', subset=64, width=4, epochs=1, limit_train_batches=1,
                              select_batches=1, select_tune_steps=1), seeds=(0,)),
}


def variants() -> List[str]:
    """``darts_order1``, ``darts_order1+pt``, ... (strategy x option)."""
    return [group if option == 'faithful' else f'{group}+{option}' for group in STRATEGIES for option in OPTIONS]


def settings_of(key: str) -> Dict[str, Any]:
    """The ``SearchSettings`` fields of a variant key (strategy and option)."""
    group, *options = key.split('+')
    fields = dict(STRATEGIES[group])
    for option in options:
        fields.update(OPTION_KWARGS[option])
    return fields


def count_cell(cell: List[Any]) -> Dict[str, int]:
    """Edges, parameter-free edges and skip-connects of a genotype cell (``[(op, input), ...]``)."""
    ops = [op for op, _ in cell]
    return {'edges': len(ops), 'parameter_free': sum(op in PARAMETER_FREE for op in ops),
            'skip': ops.count('skip_connect'), 'pool': sum(op.endswith('pool_3x3') for op in ops),
            'none': ops.count('none')}


def search_run(key: str, seed: int, size: Dict[str, Any], out: Path) -> Dict[str, Any]:
    """One search; its cells' counts, CPU seconds (one thread) and how decided α ended."""
    _quiet_worker(1)
    from nni_darts_ext.search import SearchSettings, run_search
    settings = SearchSettings(**settings_of(key), **size, seed=seed, out=str(out), progress_bar=False)
    cpu = time.process_time()
    result = run_search(settings, overwrite=True)
    cpu = time.process_time() - cpu
    genotype = result.genotype
    decision = {cell: {k: s[k] for k in ('decided', 'max_prob_vs_uniform')}
                for cell, s in result.extra['decision'].items()}
    return {'key': key, 'seed': seed, 'size': size, 'genotype': str(genotype), 'arch': result.arch,
            'normal': count_cell(genotype.normal), 'reduce': count_cell(genotype.reduce),
            'collapsed': count_cell(genotype.normal)['parameter_free'] >= COLLAPSE_MIN,
            'supernet_val_acc': result.val_acc, 'decision': decision, 'seconds': round(cpu, 1)}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    def mean(values: List[float]) -> float:
        return round(statistics.fmean(values), 2)
    return {'seeds': [r['seed'] for r in runs],
            'normal_parameter_free': mean([r['normal']['parameter_free'] for r in runs]),
            'reduce_parameter_free': mean([r['reduce']['parameter_free'] for r in runs]),
            'normal_skip': mean([r['normal']['skip'] for r in runs]),
            'normal_pool': mean([r['normal']['pool'] for r in runs]),
            'collapsed_runs': sum(r['collapsed'] for r in runs), 'collapse': any(r['collapsed'] for r in runs),
            'decided_runs': sum(all(c['decided'] for c in r['decision'].values()) for r in runs),
            'seconds': mean([r['seconds'] for r in runs])}


def table(result: Dict[str, Any]) -> str:
    rows = ['| variant | seeds | normal: param-free / 8 (skip, pool) | reduce: param-free / 8 | collapse '
            f'(normal >= {COLLAPSE_MIN}/8) | α decided | search CPU s |', '|---|---|---|---|---|---|---|']
    for key, s in result['variants'].items():
        n = len(s['seeds'])
        rows.append(f"| {key} | {n} | {s['normal_parameter_free']:.1f} ({s['normal_skip']:.1f}, "
                    f"{s['normal_pool']:.1f}) | {s['reduce_parameter_free']:.1f} | "
                    f"{'**yes** (' + str(s['collapsed_runs']) + f'/{n})' if s['collapse'] else 'no'} | "
                    f"{s['decided_runs']}/{n} | {s['seconds']:.0f} |")
    return '\n'.join(rows)


def run(preset_name: str, out: Path, runs_dir: Path, keys: Optional[List[str]] = None) -> Dict[str, Any]:
    preset = PRESETS[preset_name]
    size = preset['search']
    keys = keys or variants()
    cache = out.parent / (out.stem + '_runs.jsonl')
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r['key'], r['seed']): r for r in read_jsonl(cache) if r.get('size') == size}
    start = time.perf_counter()
    for key in keys:
        for seed in preset['seeds']:
            if (key, seed) in done:
                continue
            print(f'collapse: {key} seed {seed}...', flush=True)
            record = search_run(key, seed, size, runs_dir / f'{key}_s{seed}')
            done[(key, seed)] = record
            with cache.open('a') as f:
                f.write(json.dumps(record) + '\n')
            print(f"collapse: {key} seed {seed}: normal {record['normal']}, reduce {record['reduce']}, "
                  f"{record['seconds']} s", flush=True)
    runs = {key: [done[(key, seed)] for seed in preset['seeds']] for key in keys}
    result = {'preset': preset_name, 'size': size, 'seeds': list(preset['seeds']),
              'options': {o: OPTION_KWARGS.get(o, {}) for o in OPTIONS}, 'parameter_free_ops': list(PARAMETER_FREE),
              'collapse_rule': f'normal cell: >= {COLLAPSE_MIN} of 8 edges parameter-free (any seed flags the variant)',
              'variants': {key: summarise(r) for key, r in runs.items()}, 'runs': runs,
              'date': datetime.date.today().isoformat(), 'commit': git_commit(),
              'device': device_name('cpu') + ', one thread per search', 'cache': shown_path(cache),
              'wall_seconds': round(time.perf_counter() - start, 1)}
    result['table'] = table(result)
    out.write_text(json.dumps(result, indent=1))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--smoke', action='store_true', help='seconds: every code path, values meaningless')
    parser.add_argument('--variants', nargs='*', default=None, help=f'some of: {", ".join(variants())}')
    parser.add_argument('--out', type=Path, default=None,
                        help='result file (default benchmarks/results/collapse.json; --smoke: collapse_smoke.json)')
    parser.add_argument('--runs-dir', type=Path, default=Path('runs/collapse'), help='search folders')
    args = parser.parse_args(argv)
    preset = 'smoke' if args.smoke else 'full'
    out = args.out or RESULTS / ('collapse_smoke.json' if args.smoke else 'collapse.json')
    result = run(preset, out, args.runs_dir / preset, args.variants)
    print(result['table'])
    print(f'collapse: wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
