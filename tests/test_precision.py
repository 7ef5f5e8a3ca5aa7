"""The GPU path on CPU: device flags reach the Trainer, bf16 autocast keeps the second-order gradient accurate."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _helpers import tiny_space
from nni_darts_ext import accel
from nni_darts_ext.cli import build_parser
from nni_darts_ext.oneshot.bilevel import unrolled_hypergradient
from nni_darts_ext.retrain import RetrainConfig
from nni_darts_ext.search import SearchSettings
from nni_darts_ext.strategies.darts import DartsStrategy


def _flat(grads):
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize('xi', [0.025, 0.1])  # DARTS' and PC-DARTS' weight learning rates
def test_finite_difference_hypergradient_under_bf16_autocast(xi):
    torch.manual_seed(0)
    model = DartsStrategy().mutate_model(tiny_space(width=4)).eval()
    named = dict(model.named_parameters())
    alphas = [p for n, p in named.items() if '_arch_alpha' in n]
    weights = [p for n, p in named.items() if '_arch_alpha' not in n]
    xt, yt, xv, yv = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)), torch.randn(16, 1, 8, 8), \
        torch.randint(0, 10, (16,))
    train_loss = lambda: F.cross_entropy(model(xt), yt)  # noqa: E731
    val_loss = lambda: F.cross_entropy(model(xv), yv)  # noqa: E731
    exact = _flat(unrolled_hypergradient(weights, alphas, train_loss, val_loss, xi, hvp='exact'))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        finite = _flat(unrolled_hypergradient(weights, alphas, train_loss, val_loss, xi))
    cosine = F.cosine_similarity(finite, exact, dim=0).item()
    assert cosine >= 0.99, cosine  # 0.985 at xi=0.1 when the w ± εv passes ran in bf16


def test_trainer_kwargs_and_validation():
    assert accel.trainer_kwargs('cpu', '2', 'bf16-mixed') == dict(accelerator='cpu', devices=2, precision='bf16-mixed')
    assert accel.trainer_kwargs('gpu', 'auto', None)['benchmark'] is True
    assert not accel.pin_memory('cpu') and accel.pin_memory('gpu')
    with pytest.raises(ValueError, match='precision'):
        accel.trainer_kwargs('cpu', 1, 'bf17')


def test_cli_device_flags_reach_the_settings():
    from nni_darts_ext.cli import search_settings
    from nni_darts_ext.app.train_command import train_settings
    args = build_parser().parse_args(['search', '--accelerator', 'cpu', '--devices', '1', '--precision',
                                      'bf16-mixed', '--compile'])
    settings, _ = search_settings(args)
    assert (settings.accelerator, settings.devices, settings.precision, settings.compile) == \
        ('cpu', '1', 'bf16-mixed', True)
    defaults, _ = search_settings(build_parser().parse_args(['search']))
    assert (defaults.accelerator, defaults.precision, defaults.compile) == ('auto', '32-true', False)
    _, recipe, _ = train_settings(build_parser().parse_args(['train', '--genotype', 'DARTS_V2', '--precision',
                                                              'bf16-mixed']))
    assert recipe['precision'] == 'bf16-mixed' and 'accelerator' not in recipe  # unset: the recipe's default
    assert RetrainConfig().replace(precision='bf16-mixed').precision == 'bf16-mixed'


@pytest.mark.parametrize('strategy,order', [('darts', 2), ('pcdarts', 1)])
def test_search_runs_in_bf16_mixed_on_cpu(tmp_path, quiet_lightning, strategy, order):
    from nni_darts_ext.search import run_search
    settings = SearchSettings(strategy=strategy, order=order, preset='tiny', subset=64, width=4, cells=3,
                              limit_train_batches=1, out=str(tmp_path), progress_bar=False, accelerator='cpu',
                              devices=1, precision='bf16-mixed', k=2)
    torch.set_num_threads(1)
    result = run_search(settings)
    assert result.genotype is not None and result.summary()['settings']['precision'] == 'bf16-mixed'


@pytest.mark.slow
def test_compile_supernet_callback_compiles_in_place(tmp_path, quiet_lightning):
    """The --compile path on a tiny search; the 'eager' backend traces with dynamo but skips code generation, which
    takes minutes on a CPU (the default inductor backend is what a GPU run uses)."""
    from nni_darts_ext.search import run_search
    compiled = []

    class Spy(accel.CompileSupernet):
        def on_fit_start(self, trainer, pl_module):
            super().on_fit_start(trainer, pl_module)
            compiled.append(pl_module.training_module.model)

    settings = SearchSettings(strategy='darts', preset='tiny', subset=64, width=4, cells=3, limit_train_batches=1,
                              out=str(tmp_path), progress_bar=False, accelerator='cpu', devices=1)
    torch.set_num_threads(1)
    run_search(settings, callbacks=[Spy(backend='eager')])
    assert compiled and compiled[0]._compiled_call_impl is not None and compiled[0]._nni_darts_compiled
