"""CI smoke test of the benchmark suite: ``python -m benchmarks --smoke`` writes every field and the table; the GPU
script runs its CPU dry run and, without a GPU, exits 0 (values are not checked)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ('ratio_order1_vs_nni_step_time', 'ratio_order2_vs_order1_step_time', 'ratio_pc4_vs_darts_peak_memory',
          'ratio_pc4_vs_darts_step_time', 'ratio_pdarts_vs_darts_wall_time', 'quality_found_mean_acc',
          'quality_random_median_acc', 'device', 'date', 'preset')


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_smoke_run_writes_every_field_and_the_table(tmp_path):
    quality = tmp_path / 'quality.json'
    quality.write_text(json.dumps({'found': {'darts': [{'seed': 0, 'acc': 0.8, 'params': 1000, 'search_seconds': 1.0}],
                                             'pcdarts': [{'seed': 0, 'acc': 0.9, 'params': 900,
                                                          'search_seconds': 1.0}]},
                                   'random': [{'acc': 0.7, 'params': 800}], 'random_median_acc': 0.7}))
    _run('-m', 'benchmarks', '--smoke', '--out', str(tmp_path), '--quality-json', str(quality))
    results = json.loads((tmp_path / 'results.json').read_text())
    missing = [f for f in FIELDS if f not in results]
    assert not missing, missing
    assert results['preset'] == 'smoke' and results['quality_found_mean_acc'] == pytest.approx(0.85)
    assert all(results[f] is not None for f in FIELDS[:5])
    table = (tmp_path / 'results.md').read_text()
    assert '| ratio_order1_vs_nni_step_time |' in table and 'pdarts_stage3' in table
    assert (tmp_path / 'results_growth.png').stat().st_size > 0
    stages = results['sections']['memory']['configs']
    assert stages['pdarts_stage1']['median'] > 0 and stages['pdarts_stage2']['median'] is None  # RSS: n/a, not 0
    # the tiny preset's commands, timed as a user runs them
    tiny = results['sections']['tiny']
    assert list(tiny['runs']) == ['search darts', 'search pdarts', 'search pcdarts', 'train']
    assert all(run['seconds'] > 0 for run in tiny['runs'].values()) and tiny['smoke'] is True
    assert '## The tiny preset: wall time per command' in table and '| train | ' in table

    # the README block is the same table, regenerated from results.json alone
    from benchmarks import report
    readme = tmp_path / 'README.md'
    readme.write_text(f'# x\n\n## Benchmarks\n\n{report.README_BEGIN}\nold\n{report.README_END}\n\nafter\n')
    report.update_readme(readme, report.markdown(results), tmp_path / 'sub')
    text = readme.read_text()
    assert 'old' not in text and text.endswith('after\n') and '### Benchmarks (smoke)' in text
    assert '| ratio_order1_vs_nni_step_time |' in text and '![growth](sub/results_growth.png)' in text


def test_gpu_script_without_gpu_exits_cleanly(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('a GPU is present: the script would measure')
    proc = _run('benchmarks/gpu.py', '--out', str(tmp_path / 'gpu.json'))
    assert 'no GPU' in proc.stdout and not (tmp_path / 'gpu.json').exists()


@pytest.mark.slow
def test_gpu_script_cpu_dry_run(tmp_path):
    _run('benchmarks/gpu.py', '--cpu-dry-run', '--only', 'darts_order1/bf16-mixed', 'pcdarts_k4/32-true',
         'pdarts/32-true', '--timeout', '900', '--budget', '2000', '--out', str(tmp_path / 'gpu.json'))
    results = json.loads((tmp_path / 'gpu.json').read_text())
    assert results['dry_run'] and set(results['runs']) == {'darts_order1/bf16-mixed', 'pcdarts_k4/32-true',
                                                          'pdarts/32-true'}
    assert all('error' not in r and r['projected_gpu_hours'] > 0 for r in results['runs'].values())
    assert 'CPU DRY RUN' in (tmp_path / 'gpu.md').read_text()


def test_some_step_configurations_only(tmp_path):
    """``--configs``: only the named configurations run; ratios whose baseline did not run are n/a, not an error."""
    _run('-m', 'benchmarks', '--smoke', '--configs', 'order1,order2', 'speed', '--out', str(tmp_path))
    results = json.loads((tmp_path / 'results_smoke_speed_order1_order2.json').read_text())
    assert set(results['sections']['speed']['configs']) == {'order1', 'order2'}
    assert results['ratio_order2_vs_order1_step_time'] > 0 and results['ratio_order1_vs_nni_step_time'] is None
    assert '| order2 |' in (tmp_path / 'results_smoke_speed_order1_order2.md').read_text()

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, '-m', 'benchmarks', '--configs', 'order3', 'speed'], cwd=str(ROOT),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown configuration(s) ['order3']" in proc.stderr


@pytest.mark.slow
def test_collapse_smoke_writes_the_cells_counts_and_the_table(tmp_path):
    """``benchmarks/collapse.py --smoke`` (issue 20's DARTS-space collapse check), two variants: every field of
    collapse.json, the counts agree with the genotypes, and a rerun only reads the cache."""
    from nni_darts_ext import arch_to_genotype
    out = tmp_path / 'collapse.json'
    args = ('benchmarks/collapse.py', '--smoke', '--variants', 'darts_order1', 'pcdarts+beta', '--out', str(out),
            '--runs-dir', str(tmp_path / 'runs'))
    proc = _run(*args)
    result = json.loads(out.read_text())
    for key in ('date', 'commit', 'device', 'size', 'seeds', 'collapse_rule', 'variants', 'runs', 'table'):
        assert key in result, key
    assert result['preset'] == 'smoke' and list(result['variants']) == ['darts_order1', 'pcdarts+beta']
    for runs in result['runs'].values():
        assert [r['seed'] for r in runs] == result['seeds']
        for r in runs:
            normal = [op for op, _ in arch_to_genotype(r['arch']).normal]
            free = sum(op in ('skip_connect', 'max_pool_3x3', 'avg_pool_3x3', 'none') for op in normal)
            assert r['normal']['edges'] == r['reduce']['edges'] == 8 and r['normal']['parameter_free'] == free
            assert r['collapsed'] == (free >= 6) and r['seconds'] > 0
    assert '| pcdarts+beta | 1 |' in proc.stdout and (tmp_path / 'collapse_runs.jsonl').exists()
    assert 'collapse: darts_order1 seed 0...' not in _run(*args).stdout  # cached


@pytest.mark.slow
def test_groundtruth_smoke_writes_every_field(tmp_path):
    """``benchmarks/groundtruth.py --smoke`` runs every code path: the four strategies on the NAS-Bench-201 space and
    NNI's baselines on the shipped table. Its budget is shorter than any cell's training, so the baselines finish no
    trial: they say so (``nothing_found``) instead of failing."""
    _run('benchmarks/groundtruth.py', '--smoke', '--out', str(tmp_path))
    result = json.loads((tmp_path / 'groundtruth_smoke.json').read_text())
    for key in ('table', 'strategies', 'baselines', 'date', 'commit', 'device'):
        assert key in result, key
    for key in ('cells', 'seeds', 'noise_ratio', 'best_acc', 'median_acc', 'recipe'):
        assert key in result['table'], key
    assert set(result['strategies']) == {'darts_order1', 'darts_order2', 'pcdarts', 'pdarts'}
    for s in result['strategies'].values():
        assert len(s['test_acc']) == len(s['percentile']) == len(s['skip_edges']) == len(s['none_edges']) == 1
    for b in result['baselines'].values():
        assert len(b['test_acc']) + b['nothing_found'] == len(b['runs']) == len(b['trials'])
