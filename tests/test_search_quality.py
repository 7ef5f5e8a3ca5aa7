"""How decided a search is, the same random masks in every pass of an unrolled α step, search
augmentation, the strategies' weight recipes and the α learning rate of short searches."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.evaluator.pytorch import DataLoader

from nni_darts_ext import DartsCellSpace
from nni_darts_ext.data import search_dataloaders, test_dataloader
from nni_darts_ext.evaluator import WEIGHT_RECIPES, DartsClassification, cosine_period, search_evaluator
from nni_darts_ext.oneshot.bilevel import first_order_hypergradient, unrolled_hypergradient
from nni_darts_ext.oneshot.decision import decision_summary, describe_decision, edge_products
from nni_darts_ext.oneshot.module import replay_random
from nni_darts_ext.oneshot.pdarts import SkipConnectDropout
from nni_darts_ext.search import (MAX_SCALED_ARC_LR, REFERENCE_ARC_STEPS, SHORT_SEARCH_ARC_BUDGET, SearchSettings,
                                  arch_steps_per_epoch)
from nni_darts_ext.space.ops import DARTS_OPS
from nni_darts_ext.strategies.pcdarts import PcDartsStrategy
from nni_darts_ext.strategies.pdarts import PDartsStrategy

UNIFORM = {op: 1 / 8 for op in DARTS_OPS}


# --- decisiveness on hand-set α ----------------------------------------------------------------------------------
def test_uniform_alpha_is_reported_undecided():
    probs = {f'normal/node{j}/edge{i}': dict(UNIFORM) for j in range(2, 4) for i in range(j)}
    s = decision_summary(probs)['normal']
    assert s['edges'] == 5
    assert s['mean_max_prob'] == pytest.approx(1 / 8) and s['max_prob_vs_uniform'] == pytest.approx(1.0)
    assert s['mean_normalized_entropy'] == pytest.approx(1.0)
    assert s['mean_margin'] == pytest.approx(0.0) and not s['decided']
    text = describe_decision({'normal': s})
    assert 'close to random' in text and '--epochs' in text


def test_decided_alpha_of_a_supernet_at_chance_is_not_called_meaningful():
    """"α is decided." is not printed after a supernet validation accuracy at chance level."""
    one_hot = {f'normal/node{j}/edge{i}': dict(UNIFORM, none=0.0, sep_conv_3x3=0.93)
               for j in range(2, 4) for i in range(j)}
    s = decision_summary(one_hot)['normal']
    assert s['decided']
    assert describe_decision({'normal': s}).endswith(' α is decided.')
    assert describe_decision({'normal': s}, val_acc=0.5, num_classes=10).endswith(' α is decided.')
    text = describe_decision({'normal': s}, val_acc=0.0703, num_classes=10)
    assert text.endswith(' α is decided, but the supernet is at chance accuracy (val acc 0.0703, chance 0.1000): the '
                         'export is not meaningful. Search longer or on more data (--epochs, --subset), or lower the '
                         'learning rates.')


def test_decisiveness_numbers_of_hand_set_alpha():
    logits = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 0.0])  # sep_conv_3x3 strongest, then sep_conv_5x5
    p = torch.softmax(logits, 0)
    edge = {op: float(v) for op, v in zip(DARTS_OPS, p)}
    none_heavy = dict(UNIFORM, none=0.51, max_pool_3x3=0.2, avg_pool_3x3=0.1, skip_connect=0.09,
                      sep_conv_3x3=0.05, sep_conv_5x5=0.02, dil_conv_3x3=0.02, dil_conv_5x5=0.01)
    s = decision_summary({'reduce/node2/edge0': edge, 'reduce/node2/edge1': none_heavy,
                          'reduce/node2/inputs': {0: 0.7, 1: 0.3}})['reduce']
    assert s['edges'] == 2  # the β label is not an edge
    assert s['mean_max_prob'] == pytest.approx((float(p.max()) + 0.51) / 2)
    entropy = float(-(p * p.log()).sum()) / math.log(8)
    q = torch.tensor(list(none_heavy.values()))
    entropy2 = float(-(q * q.log()).sum()) / math.log(8)
    assert s['mean_normalized_entropy'] == pytest.approx((entropy + entropy2) / 2)
    m = s['margins']
    assert m['reduce/node2/edge0'] == {'chosen': 'sep_conv_5x5', 'runner_up': 'dil_conv_3x3',
                                       'margin': pytest.approx(float(p[5] - p[6]))}
    # `none` is never exported: the chosen op of the none-heavy edge is max_pool over avg_pool
    assert m['reduce/node2/edge1']['chosen'] == 'max_pool_3x3'
    assert m['reduce/node2/edge1']['margin'] == pytest.approx(0.1)
    assert s['decided'] == (s['mean_max_prob'] >= 2 / 8)
    assert s['fraction_to_one_hot'] == pytest.approx((s['mean_max_prob'] - 1 / 8) / (7 / 8))


def test_decided_is_the_same_fraction_of_the_way_to_one_hot_for_any_op_count():
    def cell(ps):
        return decision_summary({'normal/node2/edge0': dict(zip('abcdefgh', ps))})['normal']
    assert cell([0.25] + [0.75 / 7] * 7)['decided']                  # 2x uniform with 8 ops: the threshold
    assert not cell([0.24] + [0.76 / 7] * 7)['decided']
    three = cell([0.45, 0.3, 0.25])  # 3 ops: 0.45 is (0.45 - 1/3) / (2/3) = 0.175 of the way > 1/7
    assert three['decided'] and three['max_prob_vs_uniform'] == pytest.approx(1.35)
    assert not cell([0.42, 0.3, 0.28])['decided']  # 0.13 of the way


def test_edge_products_multiply_beta_and_alpha():
    probs = {'normal/node2/edge0': {'a': 0.25, 'b': 0.75}, 'normal/node2/edge1': {'a': 0.5, 'b': 0.5},
             'normal/node2/inputs': {0: 0.2, 1: 0.8}}
    assert edge_products(probs) == {'normal/node2/edge0': {'a': pytest.approx(0.05), 'b': pytest.approx(0.15)},
                                    'normal/node2/edge1': {'a': pytest.approx(0.4), 'b': pytest.approx(0.4)}}
    assert edge_products({'normal/node2/edge0': {'a': 1.0}}) == {}


# --- one random draw per unrolled α step ---------------------------------------------------------------------------
def _pdarts_case(p: float, replay: bool, hvp: str, call_seed: int):
    """Second-order α gradient of a P-DARTS supernet whose skip-connects drop with probability p (float64)."""
    torch.manual_seed(0)
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)
    net = PDartsStrategy(cells=(3,), num_ops=(8,), skip_dropout=(0.5,), epochs_per_stage=2,
                         warmup_epochs=1).mutate_model(space).double()
    drops = [m for m in net.modules() if isinstance(m, SkipConnectDropout)]
    assert drops
    for m in drops:
        m.p = p
    alphas = [q for n, q in net.named_parameters() if n.endswith('_arch_alpha')]
    weights = [q for n, q in net.named_parameters() if not n.endswith('_arch_alpha')]
    xt, yt = torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (16,))
    xv, yv = torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (16,))

    def trn():
        return F.cross_entropy(net(xt), yt)

    def val():
        return F.cross_entropy(net(xv), yv)

    if replay:
        trn, val = replay_random(trn, 11, torch.device('cpu')), replay_random(val, 12, torch.device('cpu'))
    torch.manual_seed(call_seed)  # the global stream differs between the two calls compared
    # r = 1e-6 in float64: the central difference does not straddle ReLU / max-pool kinks (at r = 0.01 it does)
    g2 = unrolled_hypergradient(weights, alphas, trn, val, 0.5, hvp=hvp, r=1e-6)
    g1 = first_order_hypergradient(alphas, val)
    return torch.cat([g.flatten() for g in g2]), torch.cat([g.flatten() for g in g1])


def _fd_vs_exact(p, replay):
    fd, g1 = _pdarts_case(p, replay, 'finite_difference', call_seed=1)
    exact, _ = _pdarts_case(p, replay, 'exact', call_seed=2)
    return F.cosine_similarity(fd - g1, exact - g1, dim=0).item(), float((fd - exact).norm() / exact.norm())


def test_pdarts_order2_with_skip_dropout_matches_exact_gradient(one_thread):
    """Measured: without dropout cosine 1.0 (rel. error 9e-10); dropout 0.5 with the replayed masks the same; without
    replay the finite difference divides mask noise by 2ε (rel. error ~1e5)."""
    cos_plain, err_plain = _fd_vs_exact(0.0, replay=False)
    cos_drop, err_drop = _fd_vs_exact(0.5, replay=True)
    assert cos_plain > 0.9999 and cos_drop > 0.9999
    assert err_drop < max(1e-6, 10 * err_plain)
    cos_noise, err_noise = _fd_vs_exact(0.5, replay=False)
    assert cos_noise < 0.9 and err_noise > 1.0  # the test can tell a broken replay


def test_replay_restores_the_global_stream_and_repeats_masks():
    drop = nn.Dropout(0.5)
    x = torch.ones(1000)
    f = replay_random(lambda: drop(x), seed=3, device=torch.device('cpu'))
    torch.manual_seed(0)
    first = f()
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(f(), first) and torch.equal(f(), first)
    assert torch.equal(torch.rand(3), after)  # the replayed draws did not consume the global stream


# --- search augmentation -----------------------------------------------------------------------------------------
def _transform_of(loader):
    return repr(loader.dataset.dataset.transform)


def test_search_halves_augmented_by_default_and_switchable():
    trn, val = search_dataloaders('digits', batch_size=16, subset=64)
    for loader in (trn, val):
        assert 'RandomCrop' in _transform_of(loader) and 'Flip' not in _transform_of(loader)  # digits: no flip
    trn, val = search_dataloaders('digits', batch_size=16, subset=64, augment=False)
    assert 'Random' not in _transform_of(trn) and 'Random' not in _transform_of(val)
    assert 'Random' not in repr(test_dataloader('digits').dataset.transform)  # the α-free test loader: none
    settings = SearchSettings(preset='tiny').resolved()
    assert settings.augment is True


def test_fashion_mnist_search_flips_mnist_does_not():
    from nni_darts_ext.data import get_info, train_transform
    assert 'HorizontalFlip' in repr(train_transform(get_info('fashion-mnist')))
    assert 'HorizontalFlip' not in repr(train_transform(get_info('mnist')))


def test_no_augment_flag_reaches_the_settings():
    from nni_darts_ext.cli import build_parser, search_settings
    assert search_settings(build_parser().parse_args(['search', '--no-augment']))[0].augment is False
    assert search_settings(build_parser().parse_args(['search']))[0].augment is True


# --- weight recipes and schedules ----------------------------------------------------------------------------------
@pytest.mark.parametrize('recipe', ['darts', 'pdarts', 'pcdarts'])
def test_search_evaluator_uses_the_named_recipe(recipe):
    evaluator = search_evaluator('digits', recipe=recipe, subset=64, max_epochs=1)
    module = evaluator.module
    assert module.hparams.learning_rate == WEIGHT_RECIPES[recipe]['learning_rate']
    assert module.learning_rate_min == WEIGHT_RECIPES[recipe]['learning_rate_min']
    assert module.recipe == recipe
    assert search_evaluator('digits', recipe=recipe, subset=64, batch_size=8).module.recipe == 'custom'
    with pytest.raises(ValueError, match='recipe'):
        search_evaluator('digits', recipe='enas')


def test_strategy_warns_about_another_methods_recipe():
    module = search_evaluator('digits', recipe='darts', subset=64).module
    with pytest.warns(UserWarning, match="recipe='pcdarts'"):
        PcDartsStrategy().check_weight_recipe(module)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        PcDartsStrategy().check_weight_recipe(search_evaluator('digits', recipe='pcdarts', subset=64).module)


def test_cosine_period_with_max_epochs_minus_one():
    import pytorch_lightning as pl

    class Probe(pl.Callback):
        def on_train_end(self, trainer, module):
            self.period = cosine_period(trainer)
            self.lr = trainer.optimizers[0].param_groups[0]['lr']

    data = torch.utils.data.TensorDataset(torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,)))
    probe = Probe()
    evaluator = DartsClassification(10, learning_rate=0.1, learning_rate_min=0.0,
                                    train_dataloaders=DataLoader(data, batch_size=8),
                                    val_dataloaders=DataLoader(data, batch_size=8), max_epochs=-1, max_steps=12,
                                    logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                    callbacks=[probe], limit_val_batches=0)
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)
    from nni_darts_ext import DartsStrategy
    strategy = DartsStrategy()
    strategy.mutate_model(space)
    strategy.mutate_evaluator(evaluator).evaluate(space)
    assert probe.period == (12, 'step')  # a cosine over the 12 steps, not a period of one epoch
    assert probe.lr == pytest.approx(0.0, abs=1e-9)  # annealed to lr_min exactly at max_steps

    class NoLength:
        max_epochs, max_steps = -1, -1
    with pytest.raises(ValueError, match='max_epochs'):
        cosine_period(NoLength())


# --- α learning rate of short searches -----------------------------------------------------------------------------
def test_short_presets_scale_the_alpha_learning_rate():
    cpu = SearchSettings(strategy='darts', preset='cpu').resolved()
    steps = (cpu.epochs - cpu.warmup_epochs) * arch_steps_per_epoch(cpu)
    assert steps == 2 * (1000 // 32) and cpu.warmup_epochs == 1
    assert SHORT_SEARCH_ARC_BUDGET == pytest.approx(3 * 3e-4 * REFERENCE_ARC_STEPS['darts'])
    assert cpu.arc_learning_rate == pytest.approx(SHORT_SEARCH_ARC_BUDGET / steps)
    assert SearchSettings(strategy='darts', preset='reference').resolved().arc_learning_rate is None  # the paper's
    assert SearchSettings(strategy='darts', preset='cpu', arc_learning_rate=1e-3).resolved().arc_learning_rate == 1e-3
    pc = SearchSettings(strategy='pcdarts', preset='cpu').resolved()
    assert pc.arc_learning_rate == pytest.approx(SHORT_SEARCH_ARC_BUDGET / steps)  # one budget for every strategy
    tiny = SearchSettings(strategy='darts', preset='tiny', epochs=2, warmup_epochs=1).resolved()
    assert tiny.arc_learning_rate == MAX_SCALED_ARC_LR  # capped
