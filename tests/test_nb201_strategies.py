"""DARTS (order 1 and 2), PC-DARTS and P-DARTS on NNI's NAS-Bench-201 space (docs/groundtruth.md): one short search
each through NasExperiment, an exported arch that the ground-truth space freezes, PC-DARTS' C/K ops, P-DARTS' pruning
and M limit."""
import pytest
import torch
import torch.nn as nn
from nni.nas.experiment import NasExperiment
from nni.nas.hub.pytorch.nasbench201 import ReLUConvBN
from nni.nas.nn.pytorch import LayerChoice

from nni_darts_ext import DartsStrategy, PcDartsStrategy, PDartsStrategy
from nni_darts_ext.groundtruth.recipe import GroundTruthData
from nni_darts_ext.groundtruth.search import GroundTruthSearchRecipe, search_evaluator
from nni_darts_ext.groundtruth.space import EDGES, OPS, NasBench201Grey, build_nb201_op, edge_label, validate_arch
from nni_darts_ext.oneshot.partial_channel import (PartialChannelError, PartialChannelMixedLayer,
                                                   check_partial_channel_space)
from nni_darts_ext.oneshot.pdarts import PDartsMixedLayer, SkipConnectDropout, skip_limited_edges

LABELS = [edge_label(*e) for e in EDGES]


def _evaluator(batches: int = 2):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 16, 16, generator=g), torch.randint(0, 10, (128,), generator=g)
    data = GroundTruthData(x, y, x[:16], y[:16], x[:16], y[:16])
    recipe = GroundTruthSearchRecipe(epochs=1, batch_size=16)
    return search_evaluator(data, recipe, 0, limit_train_batches=batches, limit_val_batches=1,
                            num_sanity_val_steps=0)


def _search(strategy):
    experiment = NasExperiment(NasBench201Grey(), _evaluator(), strategy)
    experiment.run()
    arch = experiment.export_top_models(formatter='dict')[0]
    assert validate_arch(arch) == arch  # the six labels, NNI's op names
    model = NasBench201Grey().freeze(arch)
    assert not any(isinstance(m, LayerChoice) for m in model.modules())
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    return experiment, arch


@pytest.mark.parametrize('make', [
    lambda: DartsStrategy(order=1, channels_last=False),
    lambda: DartsStrategy(order=2, channels_last=False),
    lambda: PcDartsStrategy(k=2, warmup_epochs=0, channels_last=False),
    lambda: PDartsStrategy(cells=None, num_ops=(5, 3, 2), epochs_per_stage=1, warmup_epochs=0, channels_last=False),
], ids=['darts1', 'darts2', 'pcdarts', 'pdarts'])
def test_every_strategy_searches_nb201(make, one_thread, quiet_lightning):
    _search(make())


# --- PC-DARTS --------------------------------------------------------------------------------------------------------

def test_nb201_edges_carry_an_op_builder_and_frozen_models_do_not():
    space = NasBench201Grey()
    choices = [m for m in space.modules() if isinstance(m, LayerChoice)]
    assert len(choices) == 18  # 6 edges x 3 cells
    assert sorted({m.edge_spec['channels'] for m in choices}) == [8, 16, 32]
    assert all(m.edge_spec['stride'] == 1 and m.edge_spec['build'] is build_nb201_op for m in choices)
    op = build_nb201_op('conv_3x3', 4, 1)
    assert isinstance(op, ReLUConvBN) and op.op[1].in_channels == op.op[1].out_channels == 4
    assert isinstance(build_nb201_op('skip_connect', 4, 1), nn.Identity)
    check_partial_channel_space(space, 2)
    with pytest.raises(PartialChannelError, match='not divisible by k=3'):
        check_partial_channel_space(space, 3)


def test_pcdarts_builds_nnis_ops_at_c_over_k_and_exports_full_width(one_thread, quiet_lightning):
    strategy = PcDartsStrategy(k=4, warmup_epochs=0, channels_last=False)
    experiment, arch = _search(strategy)
    mixed = [m for m in strategy.supernet.modules() if isinstance(m, PartialChannelMixedLayer)]
    assert len(mixed) == 18 and {m.k for m in mixed} == {4}
    for m in mixed:
        assert list(m.names) == list(OPS)
        for name in ('conv_1x1', 'conv_3x3'):
            conv = m[name].op[1]
            assert conv.in_channels == conv.out_channels == m.channels // 4
    # the mixed ops' convolution weights: 1/K^2 of the full-width candidates'
    def conv_weights(modules):
        return sum(c.weight.numel() for m in modules for c in m.modules() if isinstance(c, nn.Conv2d))
    full = conv_weights(m for m in NasBench201Grey().modules() if isinstance(m, LayerChoice))
    assert conv_weights(mixed) * 16 == full
    # the exported model is the full-width network
    model = experiment.export_top_models(formatter='instance')[0]
    assert not any(isinstance(m, PartialChannelMixedLayer) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 8 and model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in NasBench201Grey().freeze(arch).parameters())


# --- P-DARTS ---------------------------------------------------------------------------------------------------------

def test_pdarts_prunes_every_edge_per_stage_and_limits_skips(one_thread, quiet_lightning):
    strategy = PDartsStrategy(cells=None, num_ops=(5, 3, 2), skip_dropout=(0.0, 0.3, 0.6), epochs_per_stage=1,
                              warmup_epochs=0, max_skip=0, channels_last=False)
    _, arch = _search(strategy)
    stages = strategy.result.stages
    assert [s.num_ops for s in stages] == [5, 3, 2] and [s.num_cells for s in stages] == [3, 3, 3]
    assert stages[0].ops == {label: list(OPS) for label in LABELS}
    for before, after, keep in zip(stages, stages[1:], (3, 2)):
        assert set(after.ops) == set(LABELS)
        assert all(len(names) == keep for names in after.ops.values())
        assert after.ops == before.kept_ops
        assert all(set(after.ops[label]) <= set(before.ops[label]) for label in LABELS)
    # the last supernet: mixed ops on the surviving ops only (α over them), skip-connects wrapped in dropout
    mixed = [m for m in strategy.supernet.modules() if isinstance(m, PDartsMixedLayer)]
    assert len(mixed) == 18
    for m in mixed:
        assert list(m.names) == stages[-1].ops[m.label] and m._arch_alpha.numel() == 2
        if 'skip_connect' in m.names:
            assert isinstance(m['skip_connect'], SkipConnectDropout) and m['skip_connect'].p > 0
    assert sum(op == 'skip_connect' for op in arch.values()) == 0  # M = 0
    assert all(arch[label] in stages[-1].ops[label] for label in LABELS)
    assert arch == strategy.result.arch and strategy.result.genotype is None


def test_pdarts_checks_the_nb201_space_before_training():
    with pytest.raises(ValueError, match='cells=None'):
        PDartsStrategy(cells=(5, 11, 17), num_ops=(5, 3, 2)).check_space(NasBench201Grey())
    with pytest.raises(ValueError, match=r'num_ops\[0\]=8'):
        PDartsStrategy(cells=None, num_ops=(8, 5, 3)).check_space(NasBench201Grey())
    with pytest.raises(ValueError, match='one value per stage'):
        PDartsStrategy(cells=None, num_ops=(5, 3), skip_dropout=(0.1, 0.4, 0.7))
    assert PDartsStrategy(cells=None, num_ops=(5, 3, 2)).check_space(NasBench201Grey()) == \
        {label: list(OPS) for label in LABELS}


def test_edge_level_skip_limit_drops_the_weakest_skips():
    names = {label: list(OPS) for label in LABELS}  # none, skip_connect, conv_1x1, conv_3x3, avg_pool_3x3
    weights = {label: torch.tensor([0.05, 0.5 + 0.01 * i, 0.1, 0.3 - 0.01 * i, 0.05]) for i, label in enumerate(LABELS)}
    # none strongest: the next op, not none, and no skip
    weights['cell/2_3'] = torch.tensor([0.6, 0.05, 0.2, 0.1, 0.05])
    free = skip_limited_edges(weights, names, LABELS, 6)
    assert free == {**{label: 'skip_connect' for label in LABELS[:5]}, 'cell/2_3': 'conv_1x1'}
    limited = skip_limited_edges(weights, names, LABELS, 2)
    # the two strongest skip weights (the last skip edges) keep it, the others take their next op (conv_3x3)
    assert limited == {'cell/0_1': 'conv_3x3', 'cell/0_2': 'conv_3x3', 'cell/1_2': 'conv_3x3',
                       'cell/0_3': 'skip_connect', 'cell/1_3': 'skip_connect', 'cell/2_3': 'conv_1x1'}
    # an edge left with {none, skip_connect} drops the edge (none); one with only skip_connect keeps it
    two = {'a': ['none', 'skip_connect'], 'b': ['skip_connect']}
    w = {'a': torch.tensor([0.2, 0.8]), 'b': torch.tensor([1.0])}
    assert skip_limited_edges(w, two, ['a', 'b'], 0) == {'a': 'none', 'b': 'skip_connect'}
