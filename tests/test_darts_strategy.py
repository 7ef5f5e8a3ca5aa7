"""DartsStrategy through NNI: NasExperiment, export, freeze, custom spaces, evaluators, CLI."""
import json

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from nni.nas.evaluator.pytorch import Classification, Lightning, LightningModule, Trainer
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
from nni.nas.strategy import DARTS

from nni_darts_ext import DartsStrategy, arch_to_genotype
from nni_darts_ext.data import search_dataloaders
from nni_darts_ext.evaluator import search_evaluator
from nni_darts_ext.oneshot.mixed import DartsMixedInput, DartsMixedLayer
from _helpers import TRAINER, tiny_space, train_a_step


def run_experiment(space, evaluator, strategy):
    exp = NasExperiment(space, evaluator, strategy)
    try:
        exp.run()
        return exp.export_top_models(formatter='dict')[0]
    finally:
        exp.stop()


def tiny_evaluator(**kwargs):
    return search_evaluator('digits', batch_size=32, subset=192, max_epochs=1, limit_train_batches=2,
                            limit_val_batches=1, **TRAINER, **kwargs)


@pytest.mark.parametrize('order', [1, 2])
def test_nas_experiment_search_exports_and_freezes(order):
    space = tiny_space()
    strategy = DartsStrategy(order=order)
    arch = run_experiment(space, tiny_evaluator(), strategy)
    assert set(arch) == set(tiny_space().simplify())
    genotype = arch_to_genotype(arch)
    assert len(genotype.normal) == 8 and all(op != 'none' for op, _ in genotype.normal + genotype.reduce)
    # supernet modules are ours: unweighted node sums, mixed layers with shared alpha per label
    mixed = [m for m in space.modules() if isinstance(m, DartsMixedLayer)]
    assert mixed and all(isinstance(m, DartsMixedInput) for m in space.modules() if isinstance(m, InputChoice))
    assert len({id(m._arch_alpha) for m in mixed}) == 28  # 14 normal + 14 reduce labels
    model = space.freeze(arch)
    assert sum(len(node.edges) for node in model.cells[0].nodes) == 8
    train_a_step(model)
    history = strategy.search_module.genotype_history
    assert history and history[-1]['val_acc'] is not None


def test_nni_builtin_darts_on_our_space():
    space = tiny_space()
    arch = run_experiment(space, tiny_evaluator(), DARTS())
    train_a_step(tiny_space().freeze(arch))


def test_node_export_semantics():
    """Top-2 edges by their strongest non-none op; none never chosen; unused edges carry 'none'."""
    space = tiny_space()
    strategy = DartsStrategy()
    strategy.mutate_model(space)
    alphas = strategy._arch_parameters
    names = list(space.simplify()['normal/node4/edge0'].values)
    with torch.no_grad():
        for alpha in alphas.values():
            alpha.zero_()
        alphas['normal/node4/edge0'][names.index('none')] = 10.0          # strong none: must not count
        alphas['normal/node4/edge1'][names.index('dil_conv_5x5')] = 2.0
        alphas['normal/node4/edge2'][names.index('sep_conv_3x3')] = 3.0
        alphas['normal/node4/edge0'][names.index('skip_connect')] = 1.0
    node = next(m for m in space.modules() if isinstance(m, DartsMixedInput) and m.label == 'normal/node4/inputs')
    exported = node.export({})
    assert exported['normal/node4/inputs'] == [1, 2]
    assert exported['normal/node4/edge1'] == 'dil_conv_5x5' and exported['normal/node4/edge2'] == 'sep_conv_3x3'
    assert exported['normal/node4/edge0'] == 'none'


def test_arch_step_second_order_restores_weights_and_differs_from_first_order():
    """The module's order-2 arch step moves alpha by the unrolled gradient and leaves w where it was."""
    results = {}
    for order in (1, 2):
        torch.manual_seed(0)
        space = tiny_space()
        strategy = DartsStrategy(order=order, channels_last=False)
        evaluator = tiny_evaluator()
        strategy.mutate_model(space)
        lightning = strategy.mutate_evaluator(evaluator)
        module = lightning.module
        module.set_model(space)
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, **TRAINER)
        captured = {}

        class Capture(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, captured=captured):
                captured['w'] = [p.detach().clone() for p in pl_module.weight_optimizer().param_groups[0]['params']]
                original = pl_module.weight_step

                def weight_step(trn_batch, idx):
                    captured['w_after_arch'] = [p.detach().clone()
                                                for p in pl_module.weight_optimizer().param_groups[0]['params']]
                    captured['alpha_grad'] = [a.grad.clone() for a in pl_module.arch_parameters()]
                    return original(trn_batch, idx)
                pl_module.weight_step = weight_step

        trainer.callbacks.append(Capture())
        trainer.fit(module, train_dataloaders=lightning.datamodule.train_dataloader())  # weight + α halves
        assert all(torch.equal(a, b) for a, b in zip(captured['w'], captured['w_after_arch']))
        results[order] = torch.cat([g.flatten() for g in captured['alpha_grad']])
    diff = (results[2] - results[1]).norm() / results[1].norm()
    assert diff > 1e-4, f'order 2 gradient equals order 1 ({diff}): the virtual step never happened'


class CustomSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.conv = LayerChoice({'conv3': nn.Conv2d(1, 8, 3, padding=1), 'conv5': nn.Conv2d(1, 8, 5, padding=2),
                                 'pool': nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(1, 8, 1))}, label='conv')
        self.act = LayerChoice([nn.ReLU(), nn.Tanh()], label='act')
        self.branch = nn.ModuleList([nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)])
        self.pick = InputChoice(2, 1, label='pick')
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        h = self.act(self.conv(x))
        h = self.pick([b(h) for b in self.branch])
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize('order', [1, 2])
def test_custom_non_cell_space(order):
    train, val = search_dataloaders('digits', batch_size=32, subset=128)
    evaluator = Classification(num_classes=10, train_dataloaders=train, val_dataloaders=val, max_epochs=1,
                               limit_train_batches=2, limit_val_batches=1, **TRAINER)
    space = CustomSpace()
    arch = run_experiment(space, evaluator, DartsStrategy(order=order))
    assert arch['conv'] in ('conv3', 'conv5', 'pool') and arch['act'] in (0, 1) and len(arch['pick']) == 1
    train_a_step(CustomSpace().freeze(arch))


class UserModule(LightningModule):
    """A user's own Lightning module (automatic optimisation, one optimiser)."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen += 1
        return nn.functional.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log('val_acc', (self.model(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)


def test_user_lightning_module_second_order():
    train, val = search_dataloaders('digits', batch_size=32, subset=128)
    module = UserModule()
    evaluator = Lightning(module, Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, **TRAINER),
                          train_dataloaders=train, val_dataloaders=val)
    arch = run_experiment(tiny_space(), evaluator, DartsStrategy(order=2))
    arch_to_genotype(arch)
    assert module.seen == 2 * 5  # per batch: 4 passes for the unrolled alpha step + 1 weight step


class ZeroValidationGradient(UserModule):
    """Its validation passes (even step indices in DartsLightningModule) depend on neither w nor α: ∇_w' L_val = 0."""

    def training_step(self, batch, batch_idx):
        if batch_idx % 2 == 1:
            return super().training_step(batch, batch_idx)
        return (self.model(batch[0]) * 0.0).sum()


def test_second_order_goes_on_when_the_validation_gradient_is_zero(caplog):
    """NNI's own one-shot tests with DartsStrategy(order=2) stopped on a batch with ‖∇_w' L_val(w', α)‖ = 0
    ("the finite-difference radius ε = r/‖v‖ is undefined"): the step goes on with ∇_α L_val(w', α), is logged
    once and counted per epoch in the history."""
    train, val = search_dataloaders('digits', batch_size=32, subset=128)
    evaluator = Lightning(ZeroValidationGradient(),
                          Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, **TRAINER),
                          train_dataloaders=train, val_dataloaders=val)
    strategy = DartsStrategy(order=2)
    with caplog.at_level('WARNING', logger='nni_darts_ext'):
        arch_to_genotype(run_experiment(tiny_space(), evaluator, strategy))
    history = strategy.search_module.genotype_history
    assert [h.get('zero_direction_steps') for h in history] == [2]
    assert sum("‖∇_w' L_val(w', α)‖ = 0" in r.getMessage() for r in caplog.records) == 1


def test_bad_strategy_arguments():
    with pytest.raises(ValueError, match='order'):
        DartsStrategy(order=3)
    with pytest.raises(ValueError, match='hvp'):
        DartsStrategy(hvp='magic')


def test_cli_search(tmp_path, caplog):
    from nni_darts_ext.cli import main
    out = tmp_path / 'run'
    caplog.set_level('INFO', logger='nni_darts_ext')
    assert main(['search', '--preset', 'tiny', '--order', '2', '--limit-train-batches', '2', '--out', str(out),
                 '--no-progress-bar']) == 0
    ours = [r.getMessage() for r in caplog.records if r.name.startswith('nni_darts_ext')]
    assert ours[0].startswith('preset tiny: seconds: 10-20 s on 2 idle CPU cores'), ours[:3]
    arch = json.loads((out / 'arch.json').read_text())
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['strategy'] == 'darts' and summary['order'] == 2 and summary['genotype']
    assert (out / 'genotype.txt').read_text().startswith('Genotype(')
    assert list((out / 'logs').glob('events.out.tfevents.*'))
    train_a_step(tiny_space().freeze(arch))
    assert main(['search', '--preset', 'tiny', '--dataset', 'nope', '--out', str(tmp_path / 'bad')]) == 2
