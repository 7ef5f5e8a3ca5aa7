"""``python -m benchmarks``: every benchmark in one command; ``results.json`` and the generated ``results.md``.

    python -m benchmarks                 # all: speed, memory, growth, whole P-DARTS search, quality (~65 min, 2 cores)
    python -m benchmarks --quick         # speed, memory, growth within ~15 min on 2 cores; quality from file
    python -m benchmarks --smoke         # seconds (CI); values are not meaningful
    python -m benchmarks groundtruth     # searches against the NAS-Bench-201 ground truth (--quick: <= 30 min)
    python -m benchmarks speed memory    # some parts only -> results_speed_memory.{json,md}
    python -m benchmarks tiny            # wall time of the CLI's --preset tiny search (3 strategies) and train
    python -m benchmarks --preset reference speed memory   # at the papers' search size (hours, ~9 GB)
    python -m benchmarks --preset cpu --configs order1,order2 speed   # some step configurations only

Configurations compared in a ratio run interleaved (A B C A B C ...), each run in a fresh process (except
``--smoke``); the median over the repeats is reported with its spread. Speed and memory are two readings of the
same runs. Method details: ``benchmarks/_measure.py``. The GPU figures come from ``benchmarks/gpu.py``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks import report, suite
from benchmarks._measure import ROOT, device_name, git_commit, shown_path

PARTS = ('speed', 'memory', 'growth', 'pdarts', 'quality', 'tiny', 'groundtruth')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('parts', nargs='*', default=[], metavar='PART',
                        help=f'some of {", ".join(PARTS)} (default: all)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true', help='quick preset; quality read from --quality-json')
    mode.add_argument('--smoke', action='store_true', help='smoke preset (seconds, in-process)')
    mode.add_argument('--preset', choices=sorted(suite.PRESETS), default=None, help='size preset (default full)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads per run (1: steadiest on a 2-core machine shared with other jobs)')
    parser.add_argument('--configs', default=None,
                        help=f'comma-separated step configurations of speed/memory (default all: '
                             f'{",".join(suite.SPEED_CONFIGS)})')
    parser.add_argument('--repeats', type=int, default=None, help='interleaved repeats (default: the preset\'s)')
    parser.add_argument('--out', default=str(ROOT / 'benchmarks'), help='folder of results.json / results.md')
    parser.add_argument('--quality-json', default=str(ROOT / 'benchmarks' / 'results' / 'quality.json'))
    parser.add_argument('--groundtruth-json', default=str(ROOT / 'benchmarks' / 'results' / 'groundtruth.json'))
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f'unknown part(s) {unknown}; allowed: {list(PARTS)}')

    configs = None
    if args.configs:
        names = [c.strip() for c in args.configs.split(',') if c.strip()]
        bad = [c for c in names if c not in suite.SPEED_CONFIGS]
        if bad or not names:
            parser.error(f'unknown configuration(s) {bad}; allowed: {",".join(suite.SPEED_CONFIGS)}')
        configs = {name: suite.SPEED_CONFIGS[name] for name in names}
    preset_name = 'smoke' if args.smoke else 'quick' if args.quick else args.preset or 'full'
    preset = dict(suite.PRESETS[preset_name])
    if args.repeats:
        preset['repeats'] = args.repeats
    full = preset_name in ('full', 'reference') and not args.parts
    parts = args.parts or list(PARTS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # results.json for the whole suite; results_[<preset>_]<parts>[_<configs>].json for a selection
    stem = '_'.join(['results', *([preset_name] if args.parts and preset_name != 'full' else []), *args.parts,
                     *(configs or [])])
    start = time.time()
    sections: Dict[str, Any] = {}

    runs = None
    if {'speed', 'memory'} & set(parts) or ('pdarts' in parts and not full):
        runs = suite.step_runs(preset, args.threads, configs)
    if 'speed' in parts:
        sections['speed'] = suite.speed(runs)
    if 'memory' in parts:
        sections['memory'] = suite.memory(runs, preset['fresh'])
    if 'growth' in parts:
        sections['growth'] = suite.growth(preset, args.threads)
    if 'pdarts' in parts:
        sections['pdarts'] = suite.pdarts_wall_time(runs, whole_search=full, out_dir=out)
    if 'quality' in parts:
        sections['quality'] = suite.quality(Path(args.quality_json), run_benchmark=full)
    if 'groundtruth' in parts:
        # `python -m benchmarks groundtruth [--quick]` runs it; the whole suite reads the file unless it is `full`
        asked = 'groundtruth' in args.parts and not args.smoke
        sections['groundtruth'] = suite.groundtruth(Path(args.groundtruth_json), run_benchmark=full or asked,
                                                    quick=args.quick)
    if 'tiny' in parts:  # the CLI's tiny preset as a user runs it
        sections['tiny'] = suite.tiny_costs(args.threads, smoke=args.smoke)

    results: Dict[str, Any] = dict(
        **suite.headline(sections), device=device_name('cpu'),
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        preset=preset_name, commit=git_commit(),
        machine=f'{platform.node()} ({platform.machine()}, Python {platform.python_version()})',
        wall_seconds=time.time() - start, command=' '.join(['python -m benchmarks', *(argv or sys.argv[1:])]),
        threads=args.threads, configs=list(configs or suite.SPEED_CONFIGS), sizes=preset, growth_plot=None,
        sections=sections)
    if 'growth' in sections:
        results['growth_plot'] = shown_path(report.plot_growth(sections['growth'], out / f'{stem}_growth.png'))
    (out / f'{stem}.json').write_text(json.dumps(results, indent=2, default=str))
    (out / f'{stem}.md').write_text(report.markdown(results))
    print(report.markdown(results))
    print(f'written {out / f"{stem}.json"}, {out / f"{stem}.md"}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
