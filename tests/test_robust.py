"""β-decay (Ye et al., CVPR 2022), random smoothing (SDARTS: Chen & Hsieh, ICML 2020), the exposed Hessian-vector
product options and perturbation selection (DARTS-PT: Wang et al., ICLR 2021)."""
import pytest
import torch
import torch.nn as nn
from nni.mutable import frozen_context
from nni.nas.evaluator.pytorch import Classification
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace

from nni_darts_ext import DartsStrategy
from nni_darts_ext.data import search_dataloaders
from nni_darts_ext.evaluator import search_evaluator
from nni_darts_ext.oneshot.mixed import DartsMixedLayer
from nni_darts_ext.oneshot.regularization import (PerturbedSoftmax, add_beta_decay, beta_decay_loss,
                                                  beta_decay_weight, perturb_weights, random_smoothing,
                                                  smoothing_radius)
from _helpers import TRAINER, tiny_space


def tiny_evaluator(max_epochs=1, **kwargs):
    return search_evaluator('digits', batch_size=32, subset=192, max_epochs=max_epochs, limit_train_batches=2,
                            limit_val_batches=1, **TRAINER, **kwargs)


def run(space, strategy, max_epochs=1):
    exp = NasExperiment(space, tiny_evaluator(max_epochs), strategy)
    try:
        exp.run()
        return exp.export_top_models(formatter='dict')[0]
    finally:
        exp.stop()


# --- β-decay ----------------------------------------------------------------------------------------------------------

def test_beta_decay_gradient_is_softmax_times_lambda_over_edges():
    torch.manual_seed(0)
    edges = [torch.randn(8, requires_grad=True) for _ in range(5)]
    other = torch.randn(3, requires_grad=True)  # e.g. PC-DARTS β: not an edge, not regularised
    lam = 0.7
    # autograd of the loss itself
    (grads := torch.autograd.grad(lam * beta_decay_loss(edges), edges))
    for alpha, grad in zip(edges, grads):
        torch.testing.assert_close(grad, lam * torch.softmax(alpha.detach(), -1) / len(edges))
    # the term added to a hypergradient: only on the edge α, the others untouched
    base = [torch.full_like(a, 0.5) for a in [*edges, other]]
    added = add_beta_decay([*edges, other], base, edges, lam)
    for alpha, grad in zip(edges, added):
        torch.testing.assert_close(grad, 0.5 + lam * torch.softmax(alpha.detach(), -1) / len(edges))
    torch.testing.assert_close(added[-1], base[-1])
    assert add_beta_decay(edges, base[:5], edges, 0.0) == base[:5]
    # the reference schedule: 50 * epoch / 100 at 50 epochs = λ 25 · e / E
    assert [beta_decay_weight(25, e / 50) for e in (0, 1, 49)] == [0.0, 0.5, 24.5]


def test_beta_decay_search_lowers_logsumexp_of_alpha():
    """The same 2-epoch search with and without β-decay (λ_t = 0 in epoch 0, λ/2 in epoch 1): the regularised one
    ends with a smaller mean logsumexp(α)."""
    def mean_lse(lam):
        torch.manual_seed(0)
        space = tiny_space()
        strategy = DartsStrategy(beta_decay=lam, arc_learning_rate=0.05)
        run(space, strategy, max_epochs=2)
        alphas = {id(m._arch_alpha): m._arch_alpha for m in space.modules() if isinstance(m, DartsMixedLayer)}
        return beta_decay_loss(list(alphas.values())).item(), strategy
    plain, _ = mean_lse(0.0)
    decayed, strategy = mean_lse(1e3)
    assert strategy.config.beta_decay == 1e3
    assert decayed < plain - 0.02, (decayed, plain)


# --- random smoothing -------------------------------------------------------------------------------------------------

def test_perturbed_weights_stay_a_distribution():
    w = torch.softmax(torch.randn(6, 8), -1)
    out = perturb_weights(w, torch.empty_like(w).uniform_(-0.3, 0.3))
    assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(6))
    # all entries clipped to 0: the row keeps its largest original entry (SDARTS clip)
    out = perturb_weights(w, torch.full_like(w, -1.0))
    assert torch.equal(out.argmax(-1), w.argmax(-1)) and torch.allclose(out.sum(-1), torch.ones(6))
    assert smoothing_radius(0.3, 0.0) == pytest.approx(0.03) and smoothing_radius(0.3, 1.0) == pytest.approx(0.3)


def test_smoothing_context_perturbs_the_mix_not_alpha():
    torch.manual_seed(0)
    with frozen_context():
        layer = DartsMixedLayer({'a': nn.Linear(4, 4), 'b': nn.Linear(4, 4)}, nn.Parameter(torch.zeros(2)),
                                nn.Softmax(-1), 'edge')
    x = torch.randn(3, 4)
    clean, alpha = layer(x), layer._arch_alpha.detach().clone()
    with random_smoothing([layer], 0.4) as noise:
        noisy = layer(x)
        assert isinstance(layer._softmax, PerturbedSoftmax) and noise[id(layer._arch_alpha)].abs().max() <= 0.4
    assert not torch.allclose(noisy, clean)
    assert torch.equal(layer._arch_alpha.detach(), alpha) and isinstance(layer._softmax, nn.Softmax)
    torch.testing.assert_close(layer(x), clean)


@pytest.mark.parametrize('order', [1, 2])
def test_smoothing_on_in_the_weight_step_off_in_the_alpha_step(order):
    """Every supernet forward of a weight step (α frozen) mixes with perturbed weights, every forward of an α step
    (first order, or the unrolled passes of second order) with softmax(α); a weight step leaves α unchanged."""
    torch.manual_seed(0)
    space = tiny_space()
    strategy = DartsStrategy(order=order, smooth=0.3, warmup_epochs=1)
    calls = []

    def record(module, args):
        if module.training:
            calls.append((module._arch_alpha.requires_grad, isinstance(module._softmax, PerturbedSoftmax),
                          module._arch_alpha.detach().clone()))

    hooks = []

    def mutate_model(model):  # hook one mixed op of the supernet once the strategy has built it
        mutated = DartsStrategy.mutate_model(strategy, model)
        layer = next(m for m in mutated.modules() if isinstance(m, DartsMixedLayer))
        hooks.append(layer.register_forward_pre_hook(record))
        return mutated
    strategy.mutate_model = mutate_model
    run(space, strategy, max_epochs=2)
    assert hooks
    weight_calls = [c for c in calls if not c[0]]
    arch_calls = [c for c in calls if c[0]]
    assert len(weight_calls) == 4 and all(perturbed for _, perturbed, _ in weight_calls)
    assert arch_calls and not any(perturbed for _, perturbed, _ in arch_calls)  # order 2: 4 passes per α step
    # epoch 0 (warm-up): two weight steps, no α step in between: α identical
    torch.testing.assert_close(weight_calls[0][2], weight_calls[1][2], rtol=0, atol=0)


# --- the options on every strategy, the settings, --config and trial parameters ------------------------------------

OPTIONS = dict(beta_decay=0.5, smooth=0.3, hvp='exact', fd_radius=0.02)


@pytest.mark.parametrize('strategy', ['darts', 'pcdarts', 'pdarts'])
def test_options_reach_every_strategy(strategy):
    from nni_darts_ext import PcDartsStrategy, PDartsStrategy
    from nni_darts_ext.search import SearchSettings, build_strategy
    built = build_strategy(SearchSettings(strategy=strategy, preset='tiny', **OPTIONS).resolved())
    assert {k: getattr(built.config, k) for k in OPTIONS} == OPTIONS
    faithful = build_strategy(SearchSettings(strategy=strategy, preset='tiny').resolved()).config
    assert (faithful.beta_decay, faithful.smooth, faithful.hvp, faithful.fd_radius) == (
        0.0, 0.0, 'finite_difference', 0.01)
    cls = {'darts': DartsStrategy, 'pcdarts': PcDartsStrategy, 'pdarts': PDartsStrategy}[strategy]
    assert {k: getattr(cls(order=2, **OPTIONS).config, k) for k in OPTIONS} == OPTIONS
    for bad in (dict(beta_decay=-1.0), dict(smooth=2.0), dict(hvp='newton'), dict(fd_radius=0.0)):
        with pytest.raises(ValueError):
            cls(**bad)


# --- perturbation-based selection (DARTS-PT) --------------------------------------------------------------------------

class Pixels(nn.Module):
    """Parameter-free: ten fixed pixels of the image as logits (cannot classify digits)."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return x.flatten(1)[:, self.offset:self.offset + 10]


class OneOpFits(ModelSpace):
    """Only the learned linear op can fit the digits; the other candidates (and the second input) are parameter-free."""

    def __init__(self):
        super().__init__()
        self.op = LayerChoice({'linear': nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 'pixels': Pixels(20),
                               'avg': nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 10))},
                              label='op')
        self.other = Pixels(30)
        self.pick = InputChoice(2, 1, label='pick')

    def forward(self, x):
        return self.pick([self.op(x), self.other(x)])


def fooled_search(select, **kwargs):
    """α set so that magnitude prefers the parameter-free op and input, and never trained (warm-up = all epochs)."""
    torch.manual_seed(0)
    train, val = search_dataloaders('digits', batch_size=32, subset=512)
    evaluator = Classification(num_classes=10, learning_rate=0.05, train_dataloaders=train, val_dataloaders=val,
                               max_epochs=10, **TRAINER)
    strategy = DartsStrategy(warmup_epochs=10, select=select, select_batches=None, select_tune_steps=2, **kwargs)

    def mutate_model(model):
        mutated = DartsStrategy.mutate_model(strategy, model)
        for m in mutated.modules():
            if isinstance(m, DartsMixedLayer):
                m._arch_alpha.data = torch.tensor([0.0, 1.0, -1.0])  # linear, pixels, avg
            elif m.__class__.__name__ == 'DifferentiableMixedInput':
                m._arch_alpha.data = torch.tensor([-0.5, 0.5])     # the op's output, the fixed pixels
        return mutated
    strategy.mutate_model = mutate_model
    space = OneOpFits()
    exp = NasExperiment(space, evaluator, strategy)
    try:
        exp.run()
        return exp.export_top_models(formatter='dict')[0], strategy
    finally:
        exp.stop()


def test_perturbation_selection_finds_the_op_that_fits_where_magnitude_is_fooled():
    arch, strategy = fooled_search('magnitude')
    assert arch == {'op': 'pixels', 'pick': [1]} and strategy.selection is None
    arch, strategy = fooled_search('perturbation', select_seed=3)
    assert arch == {'op': 'linear', 'pick': [0]}
    table = strategy.selection.table()
    assert set(table) == {'op', 'pick'} and set(table['op']) == {'linear', 'pixels', 'avg'}
    assert table['op']['linear'] > 0.2 and table['op']['linear'] > max(table['op']['pixels'], table['op']['avg'])
    assert table['pick']['0'] > table['pick']['1']
    decisions = strategy.selection.decisions
    assert [d.kind for d in decisions] == ['op', 'input'] and strategy.selection.final_acc > 0.3
    assert strategy.result_extra['selection']['table'] == table
    OneOpFits().freeze(arch)(torch.randn(2, 1, 8, 8))


def test_perturbation_selection_on_nni_nasbench201():
    """LayerChoice only, labels shared by the cells ('cell/0_1'); every edge decided once, none never chosen."""
    from nni.nas.hub.pytorch import NasBench201
    from nni.nas.evaluator.pytorch import DataLoader
    from torch.utils.data import TensorDataset
    torch.manual_seed(0)
    space = NasBench201(stem_out_channels=8, num_modules_per_stack=1, num_labels=10)
    x = torch.randn(64, 3, 16, 16)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    evaluator = Classification(num_classes=10,
                               train_dataloaders=DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16),
                               val_dataloaders=DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16), max_epochs=1,
                               **TRAINER)
    strategy = DartsStrategy(select='perturbation', select_batches=1, select_tune_steps=1)
    exp = NasExperiment(space, evaluator, strategy)
    try:
        exp.run()
        arch = exp.export_top_models(formatter='dict')[0]
    finally:
        exp.stop()
    labels = set(NasBench201(stem_out_channels=8, num_modules_per_stack=1).simplify())
    assert set(arch) == labels and set(strategy.selection.table()) == labels
    assert all(op != 'none' for op in arch.values())
    assert all(set(row) == {'skip_connect', 'conv_1x1', 'conv_3x3', 'avg_pool_3x3'}
               for row in strategy.selection.table().values())
    NasBench201(stem_out_channels=8, num_modules_per_stack=1).freeze(arch)(torch.randn(2, 3, 16, 16))


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ['darts', 'pcdarts', 'pdarts'])
def test_cli_search_writes_the_decision_table(tmp_path, strategy):
    import json
    from nni_darts_ext.cli import main
    from nni_darts_ext.space.genotype import arch_to_genotype
    out = tmp_path / 'out'
    assert main(['search', '--strategy', strategy, '--preset', 'tiny', '--limit-train-batches', '2',
                 '--select', 'perturbation', '--select-batches', '1', '--select-tune-steps', '1',
                 '--beta-decay', '1', '--smooth', '0.2', '--out', str(out)]) == 0
    summary = json.loads((out / 'summary.json').read_text())
    selection = summary['selection']
    assert summary['settings']['select'] == 'perturbation' and selection['method'] == 'perturbation'
    edges = [k for k in summary['arch'] if '/edge' in k]
    nodes = [k for k in summary['arch'] if k.endswith('/inputs')]
    assert set(selection['table']) == set(edges) | set(nodes)
    assert selection['arch'] == summary['arch']
    genotype = arch_to_genotype(summary['arch'])
    assert all(op != 'none' for op, _ in genotype.normal + genotype.reduce)
    for node in nodes:
        decision = next(d for d in selection['decisions'] if d['label'] == node)
        assert summary['arch'][node] == decision['chosen'] and len(decision['chosen']) == 2


ROUND_TRIP = dict(beta_decay=0.5, smooth=0.3, hvp='exact', fd_radius=0.02, select='perturbation', select_batches=3,
                  select_tune_steps=4)


def test_options_round_trip_through_config_and_trial_parameters(tmp_path, capsys):
    import yaml
    from nni_darts_ext.cli import main
    from nni_darts_ext.search import SearchSettings
    from nni_darts_ext.trial import settings_from_params
    config = tmp_path / 'search.yaml'
    config.write_text(yaml.safe_dump({**{k.replace('_', '-'): v for k, v in ROUND_TRIP.items()}, 'preset': 'tiny'}))
    assert main(['search', '--config', str(config), '--print-config']) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {k: printed[k] for k in ROUND_TRIP} == ROUND_TRIP
    again = tmp_path / 'printed.yaml'
    again.write_text(yaml.safe_dump(printed))
    assert main(['search', '--config', str(again), '--print-config']) == 0
    assert yaml.safe_load(capsys.readouterr().out) == printed
    # the command line wins over the file
    assert main(['search', '--config', str(config), '--select', 'magnitude', '--hvp', 'finite_difference',
                 '--print-config']) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed['select'], printed['hvp'], printed['beta_decay']) == ('magnitude', 'finite_difference', 0.5)
    # nnictl trial parameters (tuners give floats and strings)
    settings = settings_from_params(SearchSettings(preset='tiny'), {
        'beta-decay': 0.5, 'smooth': '0.3', 'hvp': 'exact', 'fd_radius': 0.02, 'select': 'perturbation',
        'select_batches': 3.0, 'select-tune-steps': 4})
    assert {k: getattr(settings, k) for k in ROUND_TRIP} == ROUND_TRIP
    for params in ({'select': 'best'}, {'hvp': 'newton'}, {'beta_decay': 'x'}):
        with pytest.raises(ValueError):
            settings_from_params(SearchSettings(preset='tiny'), params)
