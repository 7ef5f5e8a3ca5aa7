"""PcDartsStrategy: partial-channel mixed op, edge normalisation, product-rule export, errors, search, CLI."""
import json

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from nni.mutable import frozen_context
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace

from nni_darts_ext import arch_to_genotype
from nni_darts_ext.evaluator import DartsWeightModule, search_evaluator
from nni_darts_ext.oneshot.mixed import DartsMixedLayer, EdgeNormalizedInput
from nni_darts_ext.oneshot.partial_channel import (PartialChannelError, PartialChannelMixedLayer, channel_shuffle,
                                                   check_partial_channel_space)
from nni_darts_ext.space.ops import DARTS_OPS, NONE_OP, build_op
from nni_darts_ext.strategies.darts import DartsStrategy
from nni_darts_ext.strategies.pcdarts import PcDartsStrategy, scaled_warmup_epochs
from _helpers import TRAINER, tiny_space, train_a_step


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    # these networks are tiny: one thread is faster and immune to other processes competing for the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def edge_choice(C=8, stride=1, names=DARTS_OPS, label='e'):
    with frozen_context():  # a choice outside a ModelSpace, as the strategy's hooks see it
        choice = LayerChoice({n: build_op(n, C, stride, search=True) for n in names}, label=label)
    choice.edge_spec = {'channels': C, 'stride': stride}
    return choice


def pc_layer(C=8, stride=1, k=4, names=DARTS_OPS, alpha=None):
    alpha = nn.Parameter(torch.randn(len(names))) if alpha is None else alpha
    with frozen_context():
        return PartialChannelMixedLayer.mutate(edge_choice(C, stride, names), 'e', {'e': alpha}, {}, k=k)


# --- the partial-channel mixed op -------------------------------------------------------------------------------
@pytest.mark.parametrize('stride', [1, 2])
def test_k1_equals_darts_mixed_op(stride):
    choice = edge_choice(8, stride)
    alpha = nn.Parameter(torch.randn(len(DARTS_OPS)))
    with frozen_context():
        darts = DartsMixedLayer.mutate(choice, 'e', {'e': alpha}, {})
        pc = PartialChannelMixedLayer.mutate(choice, 'e', {'e': alpha}, {}, k=1)
    assert all(type(pc[n]) is type(darts[n]) for n in DARTS_OPS) and pc[DARTS_OPS[4]] is not darts[DARTS_OPS[4]]
    pc.load_state_dict(darts.state_dict())
    x = torch.randn(4, 8, 7, 7)
    assert torch.equal(pc(x), darts(x))
    assert pc.export({}) == darts.export({})


def test_edge_normalized_node_is_beta_weighted_sum():
    with frozen_context():
        choice = InputChoice(n_candidates=3, n_chosen=2, reduction='sum', label='node4_inputs')
    choice.edge_labels = ['edge0', 'edge1', 'edge2']
    choice.edge_candidates = [list(DARTS_OPS)] * 3
    memo = {label: nn.Parameter(torch.randn(8)) for label in choice.edge_labels}
    beta = memo['node4_inputs'] = nn.Parameter(torch.randn(3))
    with frozen_context():
        node = EdgeNormalizedInput.mutate(choice, 'inputs', memo, {})
    assert isinstance(node, EdgeNormalizedInput) and list(node.arch_parameters()) == [beta]
    xs = [torch.randn(2, 4, 5, 5) for _ in range(3)]
    w = torch.softmax(beta, -1)
    torch.testing.assert_close(node(xs), w[0] * xs[0] + w[1] * xs[1] + w[2] * xs[2], rtol=0, atol=1e-6)
    # and β gets a gradient through the node
    node(xs).sum().backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_k4_only_a_quarter_of_the_channels_reaches_the_ops(memory_format):
    C, k = 16, 4
    layer = pc_layer(C, 1, k).to(memory_format=memory_format)
    seen = []
    for name in layer.names:
        layer[name].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(2, C, 6, 6).contiguous(memory_format=memory_format).requires_grad_()
    out = layer(x)
    assert len(seen) == len(DARTS_OPS) - 1  # `none` is never computed
    assert all(s.shape[1] == C // k and torch.equal(s, x[:, :C // k]) for s in seen)
    # every candidate is built on C/K channels
    convs = [m for name in layer.names for m in layer[name].modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.in_channels == c.out_channels == C // k for c in convs)
    # bypassed channels: gradient is exactly the upstream gradient of the output channel they land on
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(channel_shuffle(channel_shuffle(x.detach(), k), C // k), x.detach())  # C/k undoes k
    unshuffled = channel_shuffle(g, C // k)
    assert torch.equal(x.grad[:, C // k:], unshuffled[:, C // k:])
    # perturbing bypassed channels changes nothing the ops (and α) see
    alpha = layer._arch_alpha
    alpha.grad = None
    layer(x.detach()).pow(2).mean().backward()
    grad_a = alpha.grad.clone()
    alpha.grad = None
    x2 = x.detach().clone()
    x2[:, C // k:] += 5.0
    layer(x2).pow(2).mean().backward()
    torch.testing.assert_close(alpha.grad, grad_a, rtol=0, atol=0)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('size', [8, 7])
@pytest.mark.parametrize('stride', [1, 2])
def test_k4_output_shape(stride, size, memory_format):
    layer = pc_layer(16, stride, 4).to(memory_format=memory_format)
    x = torch.randn(2, 16, size, size).contiguous(memory_format=memory_format)
    out = layer(x)
    expected = size if stride == 1 else (size + 1) // 2
    assert out.shape == (2, 16, expected, expected)
    if memory_format == torch.channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('C,groups', [(16, 4), (12, 3), (8, 1), (8, 8)])
def test_channel_shuffle_is_a_permutation(C, groups):
    x = torch.arange(C, dtype=torch.float).view(1, C, 1, 1).expand(2, C, 3, 3).contiguous()
    y = channel_shuffle(x, groups)
    perm = y[0, :, 0, 0].long()
    assert sorted(perm.tolist()) == list(range(C)) and torch.equal(y, x[:, perm])
    # the PC-DARTS code's formula, and the same result in channels_last (which it keeps)
    ref = x.view(2, groups, C // groups, 3, 3).transpose(1, 2).contiguous().view(2, C, 3, 3)
    assert torch.equal(y, ref)
    y_cl = channel_shuffle(x.contiguous(memory_format=torch.channels_last), groups)
    assert torch.equal(y_cl, ref) and y_cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match='groups'):
        channel_shuffle(torch.randn(1, C + 1, 2, 2), max(groups, 2))


# --- export by the product rule ---------------------------------------------------------------------------------
def _search_module(strategy, space):
    module = strategy.configure_oneshot_module(DartsWeightModule(10))
    module.set_model(space)
    return module


def test_export_uses_the_product_rule_not_alpha_alone():
    space = tiny_space()
    strategy = PcDartsStrategy(k=4)
    module = _search_module(strategy, strategy.mutate_model(space))
    params = strategy._arch_parameters  # label -> the shared α / β tensor
    names = list(DARTS_OPS)
    assert names[0] == NONE_OP
    torch.manual_seed(1)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn_like(p) * 2)

        def set_edge(label, op, logit):
            params[label].zero_()
            params[label][names.index(op)] = logit

        # node 3: α alone prefers edges 0 and 1 (0.74, 0.51 vs 0.28); β (-3, 0, 2) makes it edges 1 and 2
        set_edge('normal/node3/edge0', 'sep_conv_3x3', 3.0)
        set_edge('normal/node3/edge1', 'dil_conv_5x5', 2.0)
        set_edge('normal/node3/edge2', 'max_pool_3x3', 1.0)
        params['normal/node3/inputs'].copy_(torch.tensor([-3.0, 0.0, 2.0]))
        params['normal/node5/edge1'][names.index(NONE_OP)] = 9.0  # `none` never scores an edge nor is exported
    arch = module.export()
    assert set(arch) == set(tiny_space().simplify())
    assert arch['normal/node3/inputs'] == [1, 2]
    assert (arch['normal/node3/edge1'], arch['normal/node3/edge2']) == ('dil_conv_5x5', 'max_pool_3x3')
    assert arch['normal/node3/edge0'] == NONE_OP  # unused edge
    assert all(op != NONE_OP for op, _ in arch_to_genotype(arch).normal)
    # every node: the independent product rule softmax(β)_i · max_{o != none} softmax(α_i)_o
    for label, value in arch.items():
        if not label.endswith('/inputs'):
            continue
        prefix = label[:-len('inputs')]
        beta = torch.softmax(params[label], -1)
        scores, best = [], []
        for i in range(len(beta)):
            w = torch.softmax(params[f'{prefix}edge{i}'], -1) * beta[i]
            w[names.index(NONE_OP)] = -1
            scores.append(float(w.max()))
            best.append(names[int(w.argmax())])
        chosen = sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:2])
        assert value == chosen, label
        assert all(arch[f'{prefix}edge{i}'] == best[i] for i in chosen)
    # α alone (DARTS' rule: strongest non-none op weight, no β) would pick edges 0 and 1 of node 3
    alone = [float(torch.softmax(params[f'normal/node3/edge{i}'], -1)[1:].max()) for i in range(3)]
    assert sorted(sorted(range(3), key=lambda i: -alone[i])[:2]) == [0, 1]


# --- spaces it cannot apply to ----------------------------------------------------------------------------------
class CustomSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = LayerChoice({'a': nn.Conv2d(8, 8, 3, padding=1), 'b': nn.Conv2d(8, 8, 5, padding=2)},
                                 label='custom_block')
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def test_clear_error_for_a_non_registry_layer_choice():
    evaluator = search_evaluator('digits', batch_size=32, subset=64, max_epochs=1, limit_train_batches=1, **TRAINER)
    exp = NasExperiment(CustomSpace(), evaluator, PcDartsStrategy())
    with pytest.raises(PartialChannelError, match=r"'custom_block'.*not registry ops.*edge_spec") as info:
        exp.run()
    assert str(info.value).count('custom_block') == 1
    # the hook alone (e.g. in mutation_hooks=[...] of another strategy) says the same
    with pytest.raises(PartialChannelError, match="'custom_block'"):
        with frozen_context():
            PartialChannelMixedLayer.mutate(CustomSpace().block, 'block', {'custom_block': torch.zeros(2)}, {})


class RegistryEdgeSpace(ModelSpace):
    """Not a DartsCellSpace: one edge of registry ops with the ``edge_spec`` metadata."""

    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.edge = LayerChoice({n: build_op(n, width, 1, search=True) for n in ('sep_conv_3x3', 'dil_conv_3x3')},
                                label='edge')
        self.edge.edge_spec = {'channels': width, 'stride': 1}
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.edge(self.stem(x)).mean((2, 3)))


def test_other_space_with_registry_edges_exports_full_width_instance():
    space = RegistryEdgeSpace()
    exp = NasExperiment(space, tiny_evaluator(limit_train_batches=1, limit_val_batches=0),
                        PcDartsStrategy(k=4, warmup_epochs=0))
    exp.run()
    assert isinstance(space.edge, PartialChannelMixedLayer)
    arch = exp.export_top_models(formatter='dict')[0]
    model = exp.export_top_models(formatter='instance')[0]  # rebuilt from the arguments, not the supernet's C/K op
    assert not isinstance(model.edge, PartialChannelMixedLayer)
    assert all(c.in_channels == 8 for c in model.edge.modules() if isinstance(c, nn.Conv2d))
    assert type(model.edge) is type(build_op(arch['edge'], 8, 1, search=True))
    train_a_step(model)


def test_clear_error_when_channels_are_not_divisible_by_k():
    with pytest.raises(PartialChannelError, match=r"'normal/node2/edge0'.*C=6 channels are not divisible by k=4"):
        PcDartsStrategy(k=4).mutate_model(tiny_space(width=6))
    # C % k == 0 but C/k = 12/4 = 3 is odd on a stride-2 skip_connect (FactorizedReduce); 2 cells = 2 reductions
    with pytest.raises(PartialChannelError, match=r"'reduce/node2/edge0'.*C/k=12//4=3 is odd"):
        check_partial_channel_space(tiny_space(width=6, num_cells=2), 4)
    with pytest.raises(ValueError, match='k=0'):
        PcDartsStrategy(k=0)


# --- search through NNI -----------------------------------------------------------------------------------------
def tiny_evaluator(**kwargs):
    kwargs = {**dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1), **TRAINER, **kwargs}
    return search_evaluator('digits', batch_size=32, subset=192, **kwargs)


class _ArchSnapshots(pl.Callback):
    """α and β at the start of training and at the end of every epoch."""

    def __init__(self):
        self.snapshots = []

    def _take(self, pl_module):
        self.snapshots.append([p.detach().clone() for p in pl_module.arch_parameters()])

    def on_train_start(self, trainer, pl_module):
        self._take(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._take(pl_module)


def test_nas_experiment_search_warmup_second_order_exports_a_full_width_arch():
    # 2 epochs of 1 step: a weight-only warm-up epoch, then one second-order step of α and β
    space = tiny_space()
    strategy = PcDartsStrategy(k=4, order=2, warmup_epochs=1)
    snapshots = _ArchSnapshots()
    exp = NasExperiment(space, tiny_evaluator(max_epochs=2, limit_train_batches=1, callbacks=[snapshots]), strategy)
    exp.run()
    supernet_layers = [m for m in space.modules() if isinstance(m, PartialChannelMixedLayer)]
    assert supernet_layers and all(m.k == 4 for m in supernet_layers)
    assert all(isinstance(m, EdgeNormalizedInput) for m in space.modules() if isinstance(m, InputChoice))
    start, after_warmup, end = snapshots.snapshots
    assert len(start) == 28 + 8  # α of 14 normal + 14 reduce edges, β of 4 + 4 nodes
    assert all(torch.equal(a, b) for a, b in zip(start, after_warmup))  # weight-only epoch: α and β frozen
    assert all(not torch.equal(a, b) for a, b in zip(after_warmup, end))  # then every α and β is trained
    arch = exp.export_top_models(formatter='dict')[0]
    assert arch == strategy.search_module.export() and set(arch) == set(tiny_space().simplify())
    genotype = arch_to_genotype(arch)
    assert all(op != NONE_OP for op, _ in genotype.normal + genotype.reduce)
    model = space.freeze(arch)
    assert not any(isinstance(m, PartialChannelMixedLayer) for m in model.modules())
    convs = [m for m in model.cells[0].nodes.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels == 8 for c in convs)  # full width C=8, not C/K=2
    train_a_step(model)
    instance = exp.export_top_models(formatter='instance')[0]
    assert not any(isinstance(m, PartialChannelMixedLayer) for m in instance.modules())
    assert [h['epoch'] for h in strategy.search_module.genotype_history] == [0, 1]


def test_defaults_and_warmup_scaling():
    strategy = PcDartsStrategy()
    assert strategy.k == 4 and strategy.config.order == 1 and strategy.config.warmup_epochs == 15
    assert strategy.config.arc_learning_rate == 6e-4 and strategy.config.arc_weight_decay == 1e-3
    assert strategy.config.arc_betas == (0.5, 0.999) and strategy.config.gradient_clip_val == 5.0
    assert isinstance(strategy, DartsStrategy)
    assert [scaled_warmup_epochs(e) for e in (1, 2, 3, 10, 50, 100)] == [0, 1, 1, 3, 15, 30]


def test_cli_search(tmp_path):
    from nni_darts_ext.cli import main
    out = tmp_path / 'run'
    assert main(['search', '--strategy', 'pcdarts', '--k', '4', '--dataset', 'digits', '--subset', '256',
                 '--epochs', '1', '--cells', '3', '--width', '8', '--batch-size', '64', '--limit-train-batches', '1',
                 '--out', str(out), '--no-progress-bar']) == 0
    arch = json.loads((out / 'arch.json').read_text())
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['strategy'] == 'pcdarts' and summary['settings']['k'] == 4 and summary['genotype']
    assert set(arch) == set(tiny_space().simplify())
    train_a_step(tiny_space().freeze(arch))


def test_import_path():
    from nni_darts_ext.strategies.pcdarts import PcDartsStrategy as Imported
    assert Imported is PcDartsStrategy
