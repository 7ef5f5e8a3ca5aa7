"""P-DARTS: pruning, skip-connect dropout schedule, the M limit, a three-stage search through NasExperiment."""
import math

import pytest
import torch
import torch.nn as nn
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

from nni_darts_ext import DartsCellSpace, arch_to_genotype
from nni_darts_ext.evaluator import search_evaluator
from nni_darts_ext.oneshot.derive import limit_skip_connects, prune_ops
from nni_darts_ext.oneshot.pdarts import (PDartsMixedLayer, SkipConnectDropout, derive_cells, prune_edges,
                                          skip_count_genotypes, skip_dropout_rate, skip_limited_arch)
from nni_darts_ext.space.genotype import count_skips, edge_label, inputs_label
from nni_darts_ext.space.ops import DARTS_OPS, FactorizedReduce, Identity
from nni_darts_ext.strategies.pdarts import PDartsStrategy

TRAINER = dict(enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
               num_sanity_val_steps=0, limit_train_batches=1, limit_val_batches=1)


# --- pruning ---------------------------------------------------------------------------------------------------------

def test_prune_keeps_exactly_the_top_k_per_edge_none_included():
    names = list(DARTS_OPS)  # none, max, avg, skip, sep3, sep5, dil3, dil5
    alphas = {'normal/node2/edge0': torch.tensor([3.0, 0.1, 0.2, 2.0, 1.5, -1.0, 0.0, 1.0]),
              'reduce/node2/edge1': torch.tensor([-2.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])}
    weights = {label: torch.softmax(a, -1) for label, a in alphas.items()}
    kept = prune_edges(weights, {label: names for label in alphas}, 5)
    assert kept == {'normal/node2/edge0': ['none', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'dil_conv_5x5'],
                    'reduce/node2/edge1': ['max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3',
                                           'sep_conv_5x5']}
    # stage 2 -> 3: 'none' still competes (and survives here as the strongest op)
    five = kept['normal/node2/edge0']
    w5 = torch.softmax(torch.tensor([2.5, 0.3, 2.0, -1.0, 0.2]), -1)
    assert prune_ops(w5, five, 3) == ['none', 'avg_pool_3x3', 'skip_connect']
    # only after the last stage is it excluded
    assert prune_ops(w5, five, 1, drop_none=True) == ['skip_connect']
    with pytest.raises(ValueError):
        prune_ops(w5, five, 6)


# --- skip-connect dropout --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('rate, epochs, warmup', [(0.7, 25, 10), (0.1, 25, 10), (0.4, 6, 2), (0.3, 3, 0)])
def test_dropout_schedule_is_the_reference_formula_at_every_epoch(rate, epochs, warmup):
    for e in range(epochs):
        # chenxin061/pdarts train_search.py
        expected = rate * (epochs - e - 1) / epochs if e < warmup else rate * math.exp(-(e - warmup) * 0.2)
        assert skip_dropout_rate(rate, e, epochs, warmup) == pytest.approx(expected, abs=1e-15)
    if warmup:
        assert skip_dropout_rate(rate, warmup, epochs, warmup) == pytest.approx(rate)  # jumps back after warm-up


def test_skip_dropout_wraps_only_stride1_skip_connect():
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)
    supernet = PDartsStrategy(cells=(3,), num_ops=(8,), skip_dropout=(0.5,), epochs_per_stage=2,
                              warmup_epochs=1).mutate_model(space)
    layers = {m.label: m for m in supernet.modules() if isinstance(m, PDartsMixedLayer)}
    assert len(layers) == 28
    for label, layer in layers.items():
        skip = layer['skip_connect']
        reduce_input = label.startswith('reduce/') and label[-1] in '01'
        if reduce_input:
            assert isinstance(skip, FactorizedReduce)
        else:
            assert isinstance(skip, SkipConnectDropout) and isinstance(skip.op, Identity)
    drop = SkipConnectDropout(Identity(), p=0.5)
    x = torch.ones(1000)
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    assert set(y.unique().tolist()) == {0.0, 2.0} and 300 < int((y == 0).sum()) < 700


# --- the M limit -----------------------------------------------------------------------------------------------------

OPS3 = ['none', 'skip_connect', 'sep_conv_3x3']


def _cell_weights():
    """Normal cell with 4 skip-connects once derived: n2e0 (.6), n2e1 (.5), n3e0 (.7), n4e1 (.55)."""
    spec = {  # (none, skip, sep) per edge of the normal cell
        (2, 0): (.1, .6, .3), (2, 1): (.1, .5, .4),
        (3, 0): (.1, .7, .2), (3, 1): (.2, .3, .5), (3, 2): (.5, .2, .3),
        (4, 0): (.2, .2, .6), (4, 1): (.1, .55, .35), (4, 2): (.3, .2, .5), (4, 3): (.7, .1, .2),
        (5, 0): (.8, .1, .1), (5, 1): (.8, .1, .1), (5, 2): (.45, .1, .45), (5, 3): (.8, .1, .1), (5, 4): (.1, .1, .8),
    }
    weights, names, nodes = {}, {}, {}
    for cell in ('normal', 'reduce'):
        for node in range(2, 6):
            nodes[inputs_label(cell, node)] = [edge_label(cell, node, i) for i in range(node)]
            for i in range(node):
                w = spec[(node, i)] if cell == 'normal' else (.1, .2, .7)
                weights[edge_label(cell, node, i)] = torch.tensor(w)
                names[edge_label(cell, node, i)] = OPS3
    return weights, names, nodes


def test_m_limit_zeroes_the_weakest_skip_connects_and_rederives():
    weights, names, nodes = _cell_weights()
    free = derive_cells(weights, names, nodes)
    assert count_skips(arch_to_genotype(free), 'normal') == 4
    arch = skip_limited_arch(weights, names, nodes, max_skip=2)
    genotype = arch_to_genotype(arch)
    assert count_skips(genotype, 'normal') == 2
    # 1st: n2e1 (0.5) is the weakest -> its next op; 2nd: n4e1 (0.55) -> node 4 takes edge 2 instead
    expected = dict(free)
    expected.update({'normal/node2/edge1': 'sep_conv_3x3', 'normal/node4/inputs': [0, 2],
                     'normal/node4/edge1': 'none', 'normal/node4/edge2': 'sep_conv_3x3'})
    assert arch == expected
    assert genotype.normal == [('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1),
                               ('sep_conv_3x3', 0), ('sep_conv_3x3', 2), ('sep_conv_3x3', 2), ('sep_conv_3x3', 4)]
    assert genotype.reduce == arch_to_genotype(free).reduce
    # the input weights are not modified
    assert weights['normal/node2/edge1'].tolist() == pytest.approx([.1, .5, .4])


@pytest.mark.parametrize('max_skip', [4, 5, 8])
def test_m_limit_changes_nothing_when_m_covers_the_count(max_skip):
    weights, names, nodes = _cell_weights()
    assert skip_limited_arch(weights, names, nodes, max_skip) == derive_cells(weights, names, nodes)


def test_genotypes_for_every_skip_count_down_to_zero():
    weights, names, nodes = _cell_weights()
    history = skip_count_genotypes(weights, names, nodes)
    assert [k for k, _ in history] == [4, 3, 2, 1, 0]
    assert all(count_skips(g, 'normal') == k for k, g in history)
    assert history[2][1] == arch_to_genotype(skip_limited_arch(weights, names, nodes, 2))
    assert history[-1][1].normal[:4] == [('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1),
                                         ('sep_conv_3x3', 2)]


def test_m_limit_stops_when_no_other_op_is_left():
    # node 2 can only use skip_connect: the procedure must end (the reference would loop forever)
    names = {edge_label('normal', 2, i): ['none', 'skip_connect'] for i in range(2)}
    weights = {label: torch.tensor([.3, .7]) for label in names}
    nodes = {inputs_label('normal', 2): list(names)}
    derive = lambda w: derive_cells(w, names, nodes)  # noqa: E731
    arch, history = limit_skip_connects(derive, weights, names, 0, 'normal')
    assert count_skips(history[-1], 'normal') == 2 and len(history) == 3


# --- a real three-stage search ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_three_stage_search_through_nas_experiment(one_thread, quiet_lightning):
    space = DartsCellSpace(width=4, num_cells=6, in_channels=1, image_size=8, num_classes=10)
    evaluator = search_evaluator('digits', batch_size=16, subset=64, max_epochs=50, **TRAINER)
    strategy = PDartsStrategy(cells=(3, 4, 5), num_ops=(8, 5, 3), skip_dropout=(0.1, 0.4, 0.7), epochs_per_stage=2,
                              warmup_epochs=1, max_skip=1)
    exp = NasExperiment(space, evaluator, strategy)
    exp.run()
    exp.stop()  # (otherwise atexit stops it after pytest closed the log streams)
    stages = strategy.result.stages
    assert [s.supernet_cells for s in stages] == [3, 4, 5]
    assert strategy.supernet.num_cells == 5 and len(strategy.supernet.cells) == 5
    for record, k in zip(stages, (8, 5, 3)):
        assert len(record.ops) == 28 and all(len(ops) == k for ops in record.ops.values())
        # the strategy owns the epochs: 2 per stage, dropout p as the reference schedule
        assert record.skip_dropout_schedule == [(e, pytest.approx(skip_dropout_rate(record.skip_dropout, e, 2, 1)))
                                                for e in range(2)]
        assert record.genotype is not None and record.normal_skips == count_skips(record.genotype, 'normal')
    for record, nxt in zip(stages, stages[1:]):  # pruning keeps the top-k by the stage's softmax(α)
        assert record.kept_ops == nxt.ops
        for label, probs in record.probs.items():
            top = sorted(probs, key=lambda n: -probs[n])[:nxt.num_ops]
            assert set(nxt.ops[label]) == set(top)
    assert stages[-1].kept_ops is None
    # finished stages' supernets / trainers are released; the engine ran one model per stage
    assert [m.model_space is None for m in strategy.engine.list_models()] == [True, True, False]
    # the export: the final arch on the user's (6-cell) space, at most M skip-connects in the normal cell
    arch = exp.export_top_models(formatter='dict')[0]
    assert arch == strategy.result.arch and set(arch) == set(space.simplify())
    genotype = arch_to_genotype(arch)
    assert count_skips(genotype, 'normal') <= 1 and genotype == strategy.result.genotype
    assert all(op != 'none' for op, _ in genotype.normal + genotype.reduce)
    assert all(arch[f'{c}/node{j}/edge{i}'] in stages[-1].ops[f'{c}/node{j}/edge{i}']
               for c, (op, i), j in [(c, p, 2 + n // 2) for c in ('normal', 'reduce')
                                     for n, p in enumerate(getattr(genotype, c))])
    counts = [k for k, _ in strategy.result.skip_genotypes]
    assert counts == list(range(stages[-1].normal_skips, -1, -1))
    assert not any(isinstance(m, BaseSuperNetModule) for m in space.modules())  # the user's space is untouched
    model = space.freeze(arch)
    assert len(model.cells) == 6
    normal_skips = sum(isinstance(op, Identity) for cell in model.cells if not cell.reduction
                       for node in cell.nodes for op in node.edges.values())
    assert normal_skips <= 1 * sum(not cell.reduction for cell in model.cells)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.randint(0, 10, (4,)))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert strategy.result.to_dict()['stages'][0]['stage'] == 1


# --- errors before any training --------------------------------------------------------------------------------------

class PlainSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.op = LayerChoice([nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 5, padding=2)], label='op')
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.op(x).mean((2, 3)))


def test_non_recreatable_space_gives_one_clear_error():
    evaluator = search_evaluator('digits', batch_size=16, subset=64, max_epochs=1, **TRAINER)
    strategy = PDartsStrategy(cells=(3, 4), num_ops=(2, 2), skip_dropout=(0.0, 0.1), epochs_per_stage=1,
                              warmup_epochs=0)
    exp = NasExperiment(PlainSpace(), evaluator, strategy)
    with pytest.raises(TypeError, match=r'recreate\(num_cells=.*op_candidates=.*DartsCellSpace'):
        exp.run()
    exp.stop()
    assert strategy.result.stages == []


def test_candidate_count_mismatch_and_bad_arguments():
    evaluator = search_evaluator('digits', batch_size=16, subset=64, max_epochs=1, **TRAINER)
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8, op_candidates=DARTS_OPS[:6])
    exp = NasExperiment(space, evaluator, PDartsStrategy(epochs_per_stage=2, warmup_epochs=1))
    with pytest.raises(ValueError, match=r'num_ops\[0\]=8 .* 6; pass num_ops=\(6, 5, 3\)'):
        exp.run()
    exp.stop()
    with pytest.raises(ValueError, match='at least 3 cells'):
        PDartsStrategy(cells=(2, 3, 4))
    with pytest.raises(ValueError, match='warmup_epochs'):
        PDartsStrategy(epochs_per_stage=5)  # default warm-up 10 would never train the architecture
    with pytest.raises(ValueError, match='one value per stage'):
        PDartsStrategy(skip_dropout=(0.1, 0.4))


@pytest.mark.slow
def test_cli_search_pdarts(tmp_path, one_thread, caplog):
    import json

    from nni_darts_ext.cli import main
    out = tmp_path / 'pdarts'
    caplog.set_level('INFO', logger='nni_darts_ext')
    assert main(['search', '--strategy', 'pdarts', '--preset', 'tiny', '--subset', '64', '--width', '4',
                 '--stage-cells', '3', '4', '5', '--stage-ops', '8', '5', '3', '--skip-dropout', '0.1', '0.4', '0.7',
                 '--max-skip', '1', '--limit-train-batches', '1', '--out', str(out), '--no-progress-bar']) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['strategy'] == 'pdarts' and summary['normal_skip_connects'] <= 1
    stages = summary['pdarts']['stages']
    assert [(s['supernet_cells'], s['num_ops']) for s in stages] == [(3, 8), (4, 5), (5, 3)]
    # one short log line per stage; the surviving ops of every edge are in summary.json only
    kept = [r.getMessage() for r in caplog.records if 'kept' in r.getMessage()]
    assert kept == ['P-DARTS stage 1: kept 5 ops per edge on 28 edges for stage 2 (the ops: pdarts.stages[0].kept_ops '
                    'in summary.json)', 'P-DARTS stage 2: kept 3 ops per edge on 28 edges for stage 3 (the ops: '
                    'pdarts.stages[1].kept_ops in summary.json)'], kept
    assert max(len(r.getMessage()) for r in caplog.records if r.name.startswith('nni_darts_ext.strategies')) < 1500
    assert len(stages[0]['kept_ops']) == 28 and all(len(ops) == 5 for ops in stages[0]['kept_ops'].values())
    assert [s['stage'] for s in summary['history']] == [1, 2, 3]  # one epoch per stage
    arch = json.loads((out / 'arch.json').read_text())
    model = DartsCellSpace(width=4, num_cells=5, in_channels=1, image_size=8).freeze(arch)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
