"""The ground-truth table (docs/groundtruth.md): canonicalisation, query, build, resume, the NNI evaluator and
baselines."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nni_darts_ext.groundtruth.space import (EDGES, OPS, NasBench201Grey, all_archs, arch_from_string,
                                             arch_to_string, canonical_key, edge_label)
from nni_darts_ext.groundtruth.table import (CellRecord, GroundTruthTable, NotInTableError, TableFormatError)

ROOT = Path(__file__).resolve().parents[1]
BEST = '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'
TINY = dict(train_images=128, valid_images=64, epochs=1, batch_size=64, test_images=500)


def arch(**ops):
    """An arch from keyword edges ``e01='conv_3x3'``; unnamed edges are ``none``."""
    return {edge_label(s, t): ops.get(f'e{s}{t}', 'none') for s, t in EDGES}


# --- canonicalisation --------------------------------------------------------------------------------------------
def test_canonical_keys_reproduce_nas_bench_201_counts():
    encodings = list(all_archs())
    assert len(encodings) == 15625
    assert len({canonical_key(a) for a in encodings}) == 6466


def test_isomorphic_cells_share_a_key_and_different_cells_do_not():
    # node3 = conv_3x3(x) + conv_1x1(x): once with conv_3x3 direct and conv_1x1 through node1, once the other way
    a = arch(e01='conv_1x1', e03='conv_3x3', e13='skip_connect', e02='avg_pool_3x3', e23='conv_1x1')
    b = arch(e01='conv_3x3', e03='conv_1x1', e13='skip_connect', e02='avg_pool_3x3', e23='conv_1x1')
    assert canonical_key(a) == canonical_key(b)
    c = arch(e01='conv_3x3', e03='conv_3x3', e13='skip_connect', e02='avg_pool_3x3', e23='conv_1x1')
    assert canonical_key(c) != canonical_key(a)


def test_unreachable_edges_do_not_change_the_key():
    # node1 is dead (its only input is none): whatever leaves it does not reach the output
    base = arch(e03='conv_3x3', e02='conv_1x1', e23='avg_pool_3x3')
    for op in OPS:
        variant = dict(base)
        variant[edge_label(1, 2)] = op
        variant[edge_label(1, 3)] = op
        assert canonical_key(variant) == canonical_key(base)
    live = dict(base, **{edge_label(0, 1): 'conv_3x3', edge_label(1, 3): 'conv_3x3'})
    assert canonical_key(live) != canonical_key(base)


def test_nas_bench_201_strings_round_trip_and_the_space_builds_them():
    a = arch_from_string(BEST)
    assert arch_to_string(a) == BEST
    assert a[edge_label(0, 3)] == 'skip_connect'
    space = NasBench201Grey()
    assert set(space.simplify()) == {edge_label(*e) for e in EDGES}
    import torch
    model = space.freeze(a)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match='warp_drive'):
        canonical_key({**a, edge_label(0, 1): 'warp_drive'})
    with pytest.raises(ValueError, match='unknown label'):
        canonical_key({**a, 'cell/0_4': 'none'})


# --- table: query round trip ----------------------------------------------------------------------------------------
def _record(a, accs, seconds=1.0):
    return CellRecord(key=canonical_key(a), arch=a, params=100, mult_adds=1000,
                      runs=[{'seed': i, 'train_acc': acc, 'valid_acc': acc, 'test_acc': acc, 'seconds': seconds}
                            for i, acc in enumerate(accs)])


def test_query_round_trip_through_a_file(tmp_path):
    a = arch(e01='conv_1x1', e03='conv_3x3', e13='skip_connect')
    iso = arch(e01='conv_3x3', e03='conv_1x1', e13='skip_connect')
    other = arch(e03='conv_3x3')
    table = GroundTruthTable([_record(a, [0.8, 0.82]), _record(other, [0.5, 0.52])], meta={'recipe': {}})
    path = tmp_path / 't.json.gz'
    table.save(path)
    loaded = GroundTruthTable.load(path)
    assert loaded.query(iso).test_acc == pytest.approx(0.81)
    assert loaded.query(other).runs == table.query(other).runs
    assert loaded.percentile(0.81) == 75.0 and loaded.percentile(0.9) == 100.0
    with pytest.raises(NotInTableError, match='not among the table'):
        loaded.query(arch(e03='avg_pool_3x3'))


def test_a_corrupt_table_file_is_one_clear_error(tmp_path):
    path = tmp_path / 'bad.json.gz'
    path.write_bytes(b'not gzip at all')
    with pytest.raises(TableFormatError, match='not a readable ground-truth table'):
        GroundTruthTable.load(path)
    with pytest.raises(FileNotFoundError, match='groundtruth build'):
        GroundTruthTable.load(tmp_path / 'missing.json.gz')


def test_noise_ratio_is_seed_std_over_between_cell_std():
    cells = [_record(arch(e03=op), [acc, acc + 0.02]) for op, acc in
             zip(('conv_3x3', 'conv_1x1', 'avg_pool_3x3', 'skip_connect'), (0.9, 0.7, 0.5, 0.3))]
    ratio = GroundTruthTable(cells).noise_ratio()
    import statistics
    assert ratio['seed_std'] == pytest.approx(statistics.stdev([0, 0.02]))
    assert ratio['between_std'] == pytest.approx(statistics.stdev([0.91, 0.71, 0.51, 0.31]))


# --- build with the real recipe -------------------------------------------------------------------------------------
def test_build_three_cells_with_the_real_recipe_and_train_a_missing_one(tmp_path):
    from nni_darts_ext.groundtruth.build import build_table, planned_cells
    from nni_darts_ext.groundtruth.recipe import GroundTruthRecipe

    recipe = GroundTruthRecipe(**TINY)
    path = tmp_path / 'tiny.json.gz'
    table = build_table(path, num_cells=0, seeds=(0,), workers=1, recipe=recipe, progress=False)
    named = planned_cells(0)
    assert len(table) == len(named) == 3                   # all skip, all conv 3x3, NAS-Bench-201's best
    loaded = GroundTruthTable.load(path)
    assert loaded.meta['recipe'] == recipe.to_dict() and loaded.meta['runs'] == 3
    assert {'commit', 'date', 'machine', 'wall_seconds', 'data'} <= set(loaded.meta)
    best = loaded.query(arch_from_string(BEST))
    assert 0.0 < best.test_acc <= 1.0 and best.params > loaded.query(named[0]).params and best.runs[0]['seconds'] > 0
    # a missing cell is trained with the recorded recipe on request and added
    missing = arch(e01='conv_1x1', e13='conv_1x1')
    with pytest.raises(NotInTableError):
        loaded.query(missing)
    record = loaded.query(missing, train_missing=True, seeds=(0,))
    assert len(loaded) == 4 and loaded.query(missing) is record
    # another recipe cannot be mixed into the same table
    with pytest.raises(ValueError, match='built with recipe'):
        build_table(path, num_cells=0, seeds=(0,), workers=1, recipe=GroundTruthRecipe(**{**TINY, 'epochs': 2}),
                    progress=False)


def test_a_killed_build_resumes_where_it_stopped(tmp_path):
    """SIGKILL a build (2 workers) after its first finished run; the next build keeps every finished run and
    trains only the rest."""
    path = tmp_path / 'resume.json.gz'
    journal = path.with_name(path.name + '.journal.jsonl')
    code = ('import sys; from nni_darts_ext.groundtruth.build import build_table; '
            'from nni_darts_ext.groundtruth.recipe import GroundTruthRecipe; '
            f'build_table(sys.argv[1], num_cells=1, seeds=(0, 1), workers=2, recipe=GroundTruthRecipe(**{TINY!r}), '
            'save_every=100, progress=False)')
    proc = subprocess.Popen([sys.executable, '-c', code, str(path)], start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (journal.exists() and journal.read_text().count('\n') >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert 1 <= len(before) < 8 and not path.exists()   # killed midway: journal only (8 = 4 cells x 2 seeds)
    from nni_darts_ext.groundtruth.build import build_table
    from nni_darts_ext.groundtruth.recipe import GroundTruthRecipe
    table = build_table(path, num_cells=1, seeds=(0, 1), workers=1, recipe=GroundTruthRecipe(**TINY), progress=False)
    assert len(table) == 4 and all(len(c.runs) == 2 for c in table.cells.values())
    for entry in before:  # the runs finished before the kill were kept, not redone
        kept = {r['seed']: r for r in table.query(entry['arch']).runs}[entry['result']['seed']]
        assert kept['seconds'] == entry['result']['seconds'] and kept['test_acc'] == entry['result']['test_acc']
    assert not journal.exists() and GroundTruthTable.load(path).meta['runs'] == 8


# --- NNI evaluator and multi-trial baselines -----------------------------------------------------------------------
def _synthetic_table():
    """Every canonical cell, scored by a known function (the count of conv_3x3 edges on the cell's key), each
    'trained' in 2 + convs seconds: the optimum and the costs are known in closed form."""
    cells = {}
    for a in all_archs():
        key = canonical_key(a)
        if key not in cells:
            score = key.count('conv_3x3') / 12
            cells[key] = CellRecord(key=key, arch=a, params=1, mult_adds=1, runs=[
                {'seed': 0, 'train_acc': score, 'valid_acc': score, 'test_acc': score,
                 'seconds': 2.0 + key.count('conv')}])
    return GroundTruthTable(cells.values(), meta={'recipe': {}})


def test_nni_random_search_and_evolution_run_on_the_table_within_a_simulated_budget(quiet_lightning):
    from nni.nas.strategy import Random, RegularizedEvolution

    from nni_darts_ext.groundtruth.evaluator import TableEvaluator, run_multi_trial

    table = _synthetic_table()
    best = max(c.test_acc for c in table.cells.values())
    results = {}
    for name, strategy in (('random', Random(seed=0)),
                           ('evolution', RegularizedEvolution(population_size=10, sample_size=3, seed=0))):
        evaluator = TableEvaluator(table)
        start = time.time()
        run_multi_trial(strategy, evaluator, budget_seconds=600)
        assert time.time() - start < 60                     # queries, not trainings
        trials = evaluator.trials
        # NNI's engine stops once the charged (simulated) seconds pass the budget: exactly one trial crosses it
        assert sum(t.elapsed <= 600 for t in trials) == len(trials) - 1 and trials[-1].elapsed > 600
        assert trials[-1].elapsed == pytest.approx(sum(table.query(t.arch).seconds for t in trials))
        chosen = evaluator.best_within(600)
        assert chosen.valid_acc == max(t.valid_acc for t in trials if t.elapsed <= 600)
        results[name] = chosen.test_acc
    # the known optimum (6 conv_3x3 edges in the key) is reachable, and evolution climbs towards it
    assert best == pytest.approx(table.query(arch_from_string(
        '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|')).test_acc)
    assert results['evolution'] >= results['random']


def test_the_evaluator_never_reports_test_accuracy():
    from nni_darts_ext.groundtruth.evaluator import TableEvaluator
    with pytest.raises(ValueError, match='never the test accuracy'):
        TableEvaluator(GroundTruthTable(), metric='test_acc')


# --- the shipped table ------------------------------------------------------------------------------------------------
def test_the_shipped_table_loads_and_ranks_cells():
    from nni_darts_ext.groundtruth.table import DEFAULT_TABLE
    assert DEFAULT_TABLE.stat().st_size < 10 * 2 ** 20
    table = GroundTruthTable.load(DEFAULT_TABLE)
    assert len(table) >= 3
    assert table.query(arch_from_string(BEST)).test_acc > table.query(
        {edge_label(*e): 'skip_connect' for e in EDGES}).test_acc
    summary = table.summary()
    assert summary['recipe']['image_size'] == 16


def test_groundtruth_command_checks_and_queries_the_table(capsys):
    from nni_darts_ext.cli import main
    assert main(['groundtruth', 'check']) == 0
    assert 'seed-noise ratio' in capsys.readouterr().out
    assert main(['groundtruth', 'query', BEST]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record['string'] == BEST and 0 <= record['percentile'] <= 100
    assert main(['groundtruth', 'query', '{"cell/0_1": "conv_3x3"}']) == 2
    assert 'lacks label' in capsys.readouterr().err
