"""The parts of ``python -m benchmarks``: speed, memory, growth, the P-DARTS wall time and the quality figures.

Every part returns a JSON-able section; :func:`headline` turns the sections into the top-level fields of
``results.json``. Measurements come from :mod:`benchmarks._measure` (fresh process per run, interleaved repeats).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from benchmarks._measure import ROOT, fit_exponent, interleaved, shown_path, summarise

__all__ = ['PRESETS', 'SPEED_CONFIGS', 'speed', 'memory', 'drop_unmeasured_stage_memory', 'growth', 'pdarts_wall_time',
           'quality', 'tiny_costs', 'headline']

# Sizes. ``shape`` = (channels, image); steps are timed after ``warmup`` untimed ones, in every run.
PRESETS: Dict[str, Dict[str, Any]] = {
    # Seconds, for CI: in-process runs (memory figures are not meaningful), one timed step.
    'smoke': dict(width=16, cells=3, batch=4, shape=(1, 8), stage_cells=(3, 3, 3), steps=1, warmup=0, repeats=2,
                  growth_repeats=1, fresh=False, growth=dict(batch=(2, 4, 8))),
    # Within 15 minutes on 2 CPU cores: speed, memory and growth at a small size.
    'quick': dict(width=16, cells=5, batch=32, shape=(3, 16), stage_cells=(3, 4, 5), steps=2, warmup=1, repeats=3,
                  growth_repeats=1, fresh=True, growth=dict(batch=(16, 32, 64), width=(8, 16, 32), cells=(3, 5, 8))),
    # The CLI's cpu search preset (5 cells, batch 64, 1x28x28 as Fashion-MNIST) at C=16 (PC-DARTS K=8 needs an even
    # C/K), plus the whole P-DARTS search and the quality benchmark: 65 min on 2 idle cores (2026-12-04).
    # Growth runs once per point (as in quick): each more repeat of its 18 runs adds ~11 min; the ratios keep 3.
    'full': dict(width=16, cells=5, batch=64, shape=(1, 28), stage_cells=(3, 4, 5), steps=3, warmup=1, repeats=3,
                 growth_repeats=1, fresh=True, growth=dict(batch=(32, 64, 128), width=(8, 16, 32), cells=(3, 5, 8))),
    # The papers' search network (C=16, 8 cells, batch 64, 3x32x32; P-DARTS 5/11/17 cells): hours, ~9 GB of RAM.
    'reference': dict(width=16, cells=8, batch=64, shape=(3, 32), stage_cells=(5, 11, 17), steps=3, warmup=1,
                      repeats=2, growth_repeats=1, fresh=True,
                      growth=dict(batch=(32, 64, 128), width=(8, 16, 32), cells=(5, 8, 11))),
}
# The CLI's cpu search preset exactly (full at C=8): PC-DARTS K=8 leaves 1 channel per op there.
PRESETS['cpu'] = dict(PRESETS['full'], width=8)

# name -> strategy settings; all at the preset's space, batch and data.
SPEED_CONFIGS: Dict[str, Dict[str, Any]] = {
    'nni_darts': dict(strategy='nni', channels_last=False),
    'order1': dict(strategy='darts', order=1),
    'order2': dict(strategy='darts', order=2),
    'pcdarts_k2': dict(strategy='pcdarts', k=2),
    'pcdarts_k4': dict(strategy='pcdarts', k=4),
    'pcdarts_k8': dict(strategy='pcdarts', k=8),
    'pdarts': dict(strategy='pdarts'),  # one run, one fit per stage
}
GROWTH_CONFIGS = ('order1', 'pcdarts_k4')


def _spec(preset: Mapping[str, Any], config: Mapping[str, Any], threads: int, **size: Any) -> Dict[str, Any]:
    channels, image = preset['shape']
    spec = dict(width=preset['width'], cells=preset['cells'], batch=preset['batch'], channels=channels, image=image,
                stage_cells=list(preset['stage_cells']), steps=preset['steps'], warmup=preset['warmup'],
                threads=threads, channels_last=True)
    spec.update(config)
    spec.update(size)
    return spec


def _print_run(name: str, result: Dict[str, Any]) -> None:
    fits = result['fits']
    times = ', '.join(f'{f["step_time"]:.3f}' for f in fits)
    mem = ', '.join(f'{f["activation_bytes"] / 2**20:.0f}' for f in fits)
    print(f'  {name:26s} step {times} s, activation {mem} MiB (load {result["loadavg"]:.1f})', flush=True)


def _stage_names(runs: List[Dict[str, Any]]) -> List[str]:
    return [f'pdarts_stage{i + 1}' for i in range(len(runs[0]['fits']))]


def _per_config(runs: Mapping[str, List[Dict[str, Any]]], key: str) -> Dict[str, List[float]]:
    """config (P-DARTS split into its stages) -> the value of ``key`` in every repeat."""
    values: Dict[str, List[float]] = {}
    for name, results in runs.items():
        if name == 'pdarts':
            for i, stage in enumerate(_stage_names(results)):
                values[stage] = [r['fits'][i][key] for r in results]
        else:
            values[name] = [r['fits'][0][key] for r in results]
    return values


def step_runs(preset: Mapping[str, Any], threads: int, configs: Optional[Mapping[str, Any]] = None
              ) -> Dict[str, List[Dict[str, Any]]]:
    """The interleaved runs behind both the speed and the memory part (the same steps, measured once)."""
    configs = SPEED_CONFIGS if configs is None else configs
    specs = {name: _spec(preset, config, threads) for name, config in configs.items()}
    print(f'step runs: {len(specs)} configurations x {preset["repeats"]} repeats, interleaved; C={preset["width"]}, '
          f'{preset["cells"]} cells, batch {preset["batch"]}, {preset["shape"][0]}x{preset["shape"][1]}x'
          f'{preset["shape"][1]}; {preset["steps"]} timed steps after {preset["warmup"]}', flush=True)
    return interleaved(specs, preset['repeats'], preset['fresh'], _print_run)


def speed(runs: Mapping[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Per-step time (median over repeats of each run's median step) and its ratio to NNI's DARTS."""
    stats = {name: summarise(v) for name, v in _per_config(runs, 'step_time').items()}
    nni = stats['nni_darts']['median'] if 'nni_darts' in stats else None  # absent under --configs
    for name, s in stats.items():
        s['ratio_vs_nni'] = s['median'] / nni if nni else None
        ratio = 'n/a' if s['ratio_vs_nni'] is None else f'{s["ratio_vs_nni"]:.2f}'
        print(f'  speed {name:15s} {s["median"]:8.3f} s/step  x{ratio} NNI  '
              f'(spread {s["spread"]:.0%}: {", ".join(f"{v:.3f}" for v in s["runs"])})', flush=True)
    return dict(unit='seconds per search step (arch step + weight step)', configs=stats)


def drop_unmeasured_stage_memory(stats: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """CPU: P-DARTS stages after the first run in the process of stage 1, whose freed memory the allocator keeps
    (RSS does not fall), so their peak-RSS reading is 0, not a measurement: mark it n/a (in place; idempotent)."""
    for name, s in stats.items():
        if name.startswith('pdarts_stage') and name != 'pdarts_stage1':
            s.update(median=None, ratio_vs_order1=None, note='not measurable by RSS after stage 1 in one process')
    return stats


def memory(runs: Mapping[str, List[Dict[str, Any]]], fresh: bool) -> Dict[str, Any]:
    """Peak activation memory (median over repeats) and its ratio to DARTS order 1."""
    stats = {name: summarise(v) for name, v in _per_config(runs, 'activation_bytes').items()}
    spec = next(iter(runs.values()))[0]['spec']
    on_gpu = spec.get('accelerator', 'cpu') in ('gpu', 'cuda')
    if not on_gpu:
        drop_unmeasured_stage_memory(stats)
    darts = stats['order1']['median'] if 'order1' in stats else None
    for name, s in stats.items():
        s['ratio_vs_order1'] = s['median'] / darts if darts and s['median'] is not None else None
        ratio = 'n/a' if s['ratio_vs_order1'] is None else f'{s["ratio_vs_order1"]:.2f}'
        mib = 'n/a' if s['median'] is None else f'{s["median"] / 2**20:.1f}'
        print(f'  memory {name:15s} {mib:>8s} MiB  x{ratio} DARTS order 1 {s.get("note", "")}', flush=True)
    method = ('peak RSS (VmHWM after clear_refs) minus RSS at on_train_start, fresh process per run'
              if fresh else 'in-process peak RSS minus RSS at on_train_start (smoke: not comparable)')
    if on_gpu:
        method = 'torch.cuda.max_memory_allocated minus memory_allocated at on_train_start'
    return dict(unit='bytes', method=method, configs=stats)


def growth(preset: Mapping[str, Any], threads: int) -> Dict[str, Any]:
    """Step time and activation memory of DARTS order 1 and PC-DARTS K=4 along batch, width C and cells."""
    specs: Dict[str, Dict[str, Any]] = {}
    for dim, points in preset['growth'].items():
        for x in points:
            for config in GROWTH_CONFIGS:
                specs[f'{config}/{dim}={x}'] = _spec(preset, SPEED_CONFIGS[config], threads, **{dim: x})
    print(f'growth: {len(specs)} runs x {preset["growth_repeats"]} repeats, interleaved', flush=True)
    runs = interleaved(specs, preset['growth_repeats'], preset['fresh'], _print_run)
    out: Dict[str, Any] = {}
    for config in GROWTH_CONFIGS:
        out[config] = {}
        for dim, points in preset['growth'].items():
            times = [statistics.median(r['step_time'] for r in runs[f'{config}/{dim}={x}']) for x in points]
            mems = [statistics.median(r['activation_bytes'] for r in runs[f'{config}/{dim}={x}']) for x in points]
            a_time, a_mem = fit_exponent(points, times), fit_exponent(points, mems)
            out[config][dim] = dict(points=list(points), step_time=times, activation_bytes=mems,
                                    exponent_time=a_time, exponent_memory=a_mem)
            fmt = lambda a: 'n/a' if a is None else f'{a:.2f}'  # noqa: E731
            print(f'  growth {config:11s} {dim:6s} time ~ x^{fmt(a_time)}, memory ~ x^{fmt(a_mem)}', flush=True)
    return out


def pdarts_wall_time(runs: Mapping[str, List[Dict[str, Any]]], whole_search: bool, out_dir: Path) -> Dict[str, Any]:
    """P-DARTS / DARTS wall time: the whole searches (``benchmarks/pdarts_time.py``) or, without them, an estimate
    from this run's step times (P-DARTS: the sum of its stages' steps; DARTS: 3 x order 1; same epochs and data,
    no warm-up in either)."""
    if whole_search:
        path = out_dir / 'results' / 'pdarts_time.json'  # beside the standalone script's default
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'pdarts_time.py'), '--out', str(path)],
                       cwd=str(ROOT), check=True)
        data = json.loads(path.read_text())
        return dict(ratio=data['ratio'], pdarts_seconds=data['pdarts']['seconds'],
                    darts_seconds=data['darts']['seconds'],
                    method=f'whole searches, benchmarks/pdarts_time.py ({data["size"]} size: P-DARTS '
                           f'{data["pdarts"]["seconds"]:.0f} s, DARTS {data["darts"]["seconds"]:.0f} s)',
                    file=shown_path(path))
    if 'pdarts' not in runs or 'order1' not in runs:
        return dict(ratio=None, method='not measured (the step runs had no pdarts or no order1 configuration)')
    stages = [statistics.median(r['fits'][i]['step_time'] for r in runs['pdarts'])
              for i in range(len(runs['pdarts'][0]['fits']))]
    darts = statistics.median(r['step_time'] for r in runs['order1'])
    return dict(ratio=sum(stages) / (len(stages) * darts), stage_step_times=stages, darts_step_time=darts,
                method='estimate: sum of the P-DARTS stages\' step times / (stages x DARTS order-1 step time), '
                       'equal epochs per stage, no warm-up')


def quality(path: Path, run_benchmark: bool) -> Dict[str, Any]:
    """The search-quality figures from ``benchmarks/results/quality.json`` (written by ``benchmarks/quality.py``,
    which ``run_benchmark`` runs first); null values when there is no such file."""
    script = ROOT / 'benchmarks' / 'quality.py'
    if run_benchmark and script.is_file():
        subprocess.run([sys.executable, str(script)], cwd=str(ROOT), check=True)
    if not path.is_file():
        print(f'quality: {path} not found; quality fields are null', flush=True)
        return dict(file=None, found_mean_acc=None, random_median_acc=None, per_strategy={})
    data = json.loads(path.read_text())
    found = data.get('found') or {}
    per_strategy = {name: statistics.mean(r['acc'] for r in rows) for name, rows in found.items() if rows}
    accs = [r['acc'] for rows in found.values() for r in rows if r.get('acc') is not None]
    random_median = data.get('random_median_acc')
    if random_median is None and data.get('random'):
        random_median = statistics.median(r['acc'] for r in data['random'])
    return dict(file=shown_path(path), found_mean_acc=statistics.mean(accs) if accs else None,
                random_median_acc=random_median, per_strategy=per_strategy,
                searches=sum(len(rows) for rows in found.values()), random_archs=len(data.get('random') or []))


# The tiny preset's promise (search.PRESET_COST): each search and the retraining of its arch within these
# wall times on an idle 2-core machine, the whole command (start-up and imports included), at the preset's fixed subset.
TINY_TARGET_SECONDS = {'search': 20.0, 'train': 15.0}


def tiny_costs(threads: Optional[int], smoke: bool = False) -> Dict[str, Any]:
    """Wall time of the CLI's ``--preset tiny`` commands as a user runs them (a fresh process each): one search per
    strategy, then ``train --arch`` on the DARTS search's folder (its dataset, digits). The load average before and
    after says whether the machine was idle. ``smoke``: smaller sizes (seconds; not the preset's figures)."""
    import os
    import tempfile
    import time
    extra = ['--subset', '64', '--width', '4', '--limit-train-batches', '1'] if smoke else []
    common = ['--no-progress-bar', *(['--threads', str(threads)] if threads else [])]
    runs: Dict[str, Dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        commands = {f'search {s}': ['search', '--strategy', s, '--preset', 'tiny', *extra, *common, '--out',
                                    str(Path(tmp, s))] for s in ('darts', 'pdarts', 'pcdarts')}
        commands['train'] = ['train', '--arch', str(Path(tmp, 'darts')), '--preset', 'tiny', '--no-plots', *extra,
                             *(['--test-subset', '64'] if smoke else []), *common, '--out', str(Path(tmp, 'train'))]
        for name, args in commands.items():
            start = time.time()
            proc = subprocess.run([sys.executable, '-m', 'nni_darts_ext', *args], cwd=tmp, capture_output=True,
                                  text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f'python -m nni_darts_ext {" ".join(args)} failed: {proc.stderr[-2000:]}')
            seconds = time.time() - start
            target = TINY_TARGET_SECONDS[name.split()[0]]
            runs[name] = dict(seconds=round(seconds, 1), target=target, within=seconds <= target)
            print(f'tiny {name}: {seconds:.1f} s (target {target:g} s on an idle machine)', flush=True)
    return dict(runs=runs, load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
                cores=os.cpu_count(), smoke=smoke,
                method='`python -m nni_darts_ext search|train --preset tiny` in a fresh process each, wall time '
                       'including start-up; 1-minute load average before and after')


def groundtruth(path: Path, run_benchmark: bool, quick: bool = False) -> Dict[str, Any]:
    """The ground-truth figures from ``benchmarks/results/groundtruth.json`` (written by ``benchmarks/groundtruth.py``,
    which ``run_benchmark`` runs first): per strategy the mean ground-truth test accuracy of its found cells, random
    search's, and the table's best; null values when there is no such file."""
    if run_benchmark:
        subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'groundtruth.py'), *(['--quick'] if quick else [])],
                       cwd=str(ROOT), check=True)
    if not path.is_file():
        print(f'groundtruth: {path} not found; ground-truth fields are null', flush=True)
        return dict(file=None, found_mean_acc={}, random_search_acc=None, best_acc=None)
    data = json.loads(path.read_text())
    found = {name: statistics.mean(s['test_acc']) for name, s in data.get('strategies', {}).items() if s['test_acc']}
    random_search = (data.get('baselines') or {}).get('random_search') or {}
    return dict(file=shown_path(path), found_mean_acc=found,
                random_search_acc=statistics.mean(random_search['test_acc']) if random_search.get('test_acc') else None,
                best_acc=data['table']['best_acc'], table_cells=data['table']['cells'], date=data.get('date'))


def headline(sections: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """The top-level ratios of results.json (None where a part did not run)."""
    def ratio(section: str, a: str, b: str) -> Optional[float]:
        configs = (sections.get(section) or {}).get('configs') or {}
        if a not in configs or b not in configs or not configs[b]['median']:
            return None
        return configs[a]['median'] / configs[b]['median']

    q = sections.get('quality') or {}
    return dict(
        ratio_order1_vs_nni_step_time=ratio('speed', 'order1', 'nni_darts'),
        ratio_order2_vs_order1_step_time=ratio('speed', 'order2', 'order1'),
        ratio_pc4_vs_darts_peak_memory=ratio('memory', 'pcdarts_k4', 'order1'),
        ratio_pc4_vs_darts_step_time=ratio('speed', 'pcdarts_k4', 'order1'),
        ratio_pdarts_vs_darts_wall_time=(sections.get('pdarts') or {}).get('ratio'),
        quality_found_mean_acc=q.get('found_mean_acc'),
        quality_random_median_acc=q.get('random_median_acc'),
        groundtruth_found_mean_acc=(sections.get('groundtruth') or {}).get('found_mean_acc'),
        groundtruth_random_search_acc=(sections.get('groundtruth') or {}).get('random_search_acc'),
        groundtruth_best_acc=(sections.get('groundtruth') or {}).get('best_acc'))

