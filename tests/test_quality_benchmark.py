"""The quality benchmark's smoke run (benchmarks/quality.py): every strategy searched with two seeds, random and
published cells retrained with one recipe, every field of quality.json written, the plots drawn (values not checked)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _quality_module():
    spec = importlib.util.spec_from_file_location('quality', ROOT / 'benchmarks' / 'quality.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quality_smoke_writes_every_field(tmp_path):
    import torch
    quality = _quality_module()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = quality.run('smoke', tmp_path / 'quality.json', tmp_path / 'runs', workers=0)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / 'quality.json').read_text())
    for key in ('found', 'random', 'published', 'random_median_acc', 'device', 'date', 'preset', 'wall_seconds'):
        assert key in saved, key
    assert set(saved['found']) == {'darts_order1', 'darts_order2', 'pcdarts', 'pdarts'}
    for runs in saved['found'].values():
        assert [r['seed'] for r in runs] == [0, 1]
        for r in runs:
            assert {'seed', 'acc', 'params', 'search_seconds'} <= set(r) and 0 <= r['acc'] <= 1 and r['params'] > 0
    assert len(saved['random']) == 2 and all({'acc', 'params'} <= set(r) for r in saved['random'])
    assert set(saved['published']) == {'DARTS_V2', 'PDARTS', 'PC_DARTS_CIFAR'}
    assert saved['random_median_acc'] == pytest.approx(sorted(r['acc'] for r in saved['random'])[0] / 2
                                                       + sorted(r['acc'] for r in saved['random'])[1] / 2)
    groups = saved['summary']['groups']
    ri = groups['darts_order1']['relative_improvement_pct']
    mean = sum(r['acc'] for r in saved['found']['darts_order1']) / 2
    assert ri == pytest.approx(100 * (mean - saved['random_median_acc']) / saved['random_median_acc'])
    assert len(saved['summary']['noise']['accs']) == 3  # one cell, three retrain seeds
    for f in saved['files'].values():
        assert Path(f).stat().st_size > 1000
    assert '| darts_order2 |' in data['table']


def test_random_cells_come_from_nni_sampling_without_none():
    quality = _quality_module()
    archs = quality.random_archs(4, 'digits', seed=3)
    assert archs == quality.random_archs(4, 'digits', seed=3) and archs[0] != archs[1]
    from nni_darts_ext import arch_to_genotype
    for arch in archs:
        genotype = arch_to_genotype(arch)
        assert all(op != 'none' for op, _ in genotype.normal + genotype.reduce)
        for j in range(2, 6):  # two distinct inputs per node
            inputs = arch[f'normal/node{j}/inputs']
            assert len(set(inputs)) == 2 and all(0 <= i < j for i in inputs)


def test_log_param_fit_recovers_a_line():
    import math
    quality = _quality_module()
    points = [{'params': p, 'acc': 0.5 + 0.02 * math.log(p)} for p in (1e3, 5e3, 2e4, 1e5)]
    fit = quality.log_param_fit(points)
    assert fit['slope_per_log_param'] == pytest.approx(0.02) and fit['intercept'] == pytest.approx(0.5)
