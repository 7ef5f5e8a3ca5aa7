"""Stop a search that diverged, with an error that says where and what to do (a Lightning callback).

:class:`DivergenceGuard` checks after every training step that the loss, the architecture parameters (α, β) and
their gradients, the weights and their gradients, and the BN running statistics are finite, and after every
validation that the validation loss is. The first non-finite value stops the run with a :class:`DivergenceError`
naming the epoch, the step, the quantity, the last good checkpoint and the learning rates to lower. Checking runs
before Lightning's ``ModelCheckpoint`` saves, so ``last.ckpt`` is always of a healthy epoch.

A ``FloatingPointError`` raised inside a training step (the search module checks its losses) is turned into the
same error by :meth:`DivergenceGuard.explain`.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Optional, Tuple

import pytorch_lightning as pl
import torch

__all__ = ['DivergenceError', 'DivergenceGuard']

_logger = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """The search diverged (a non-finite loss, parameter, gradient or BN statistic)."""


def _first_bad(named: Iterable[Tuple[str, Optional[torch.Tensor]]]) -> Optional[Tuple[str, torch.Tensor]]:
    """The first ``(name, tensor)`` that holds a NaN / inf, checking all of them with one device sync."""
    named = [(n, t) for n, t in named if t is not None and t.is_floating_point() and t.numel()]
    if not named:
        return None
    flags = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0])]


def _describe(t: torch.Tensor) -> str:
    t = t.detach().float()
    n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    return f'{n_nan} NaN and {n_inf} inf of {t.numel()} values'


class DivergenceGuard(pl.Callback):
    """Raise :class:`DivergenceError` at the first non-finite training quantity or validation loss.

    Parameters
    ----------
    learning_rates
        ``{'--lr': 0.025, '--arc-lr': 3e-4}``: the settings to lower, quoted in the error.
    check_every_n_steps
        Check parameters, gradients and BN statistics every n steps (the loss is checked every step).
    """

    def __init__(self, learning_rates: Optional[dict] = None, check_every_n_steps: int = 1):
        super().__init__()
        self.learning_rates = dict(learning_rates or {})
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self.error: Optional[DivergenceError] = None

    # --- the message ----------------------------------------------------------------------------------------------
    def _error(self, trainer: pl.Trainer, quantity: str, detail: str, where: str = 'training') -> DivergenceError:
        callback = trainer.checkpoint_callback
        last = getattr(callback, 'last_model_path', '') or getattr(callback, 'best_model_path', '') or ''
        good = f'the last good checkpoint is {last}' if last else \
            'there is no good checkpoint yet (it diverged in the first epoch)'
        lower = ' or '.join(f'{k} (now {v:g})' if isinstance(v, (int, float)) else k
                            for k, v in self.learning_rates.items()) or 'the learning rates'
        stage = getattr(getattr(trainer.lightning_module, 'stage', None), 'index', None)
        at = f'stage {stage + 1}, ' if isinstance(stage, int) else ''
        error = DivergenceError(
            f'The search diverged in {where} at {at}epoch {trainer.current_epoch}, step {trainer.global_step}: '
            f'{quantity} is not finite ({detail}); {good}. Lower {lower}, or check the data for NaN/inf.')
        self.error = error
        return error

    # --- the checks -----------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get('loss') if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            raise self._error(trainer, 'the training loss', f'{loss.detach().float().mean().item()}')
        if batch_idx % self.check_every_n_steps:
            return
        arch = getattr(pl_module, 'arch_parameters', None)
        alphas = list(arch()) if callable(arch) else []
        arch_ids = {id(p) for p in alphas}
        checks = (
            ('the architecture gradient (α/β)', [(f'α/β #{i}', p.grad) for i, p in enumerate(alphas)]),
            ('an architecture parameter (α/β)', [(f'α/β #{i}', p.detach()) for i, p in enumerate(alphas)]),
            ('a weight gradient', [(n, p.grad) for n, p in pl_module.named_parameters() if id(p) not in arch_ids]),
            ('a weight', [(n, p.detach()) for n, p in pl_module.named_parameters() if id(p) not in arch_ids]),
            ('a BatchNorm running statistic', [(n, b) for n, b in pl_module.named_buffers()
                                               if n.endswith(('running_mean', 'running_var'))]),
        )
        for quantity, named in checks:
            bad = _first_bad(named)
            if bad is not None:
                raise self._error(trainer, f'{quantity} {bad[0]}', _describe(bad[1]))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get('val_loss')
        if value is not None and not math.isfinite(float(value)):
            raise self._error(trainer, 'the validation loss', f'{float(value)}', where='validation')

    # --- errors raised elsewhere ----------------------------------------------------------------------------------
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, FloatingPointError) and not isinstance(exception, DivergenceError):
            self._error(trainer, 'a loss', str(exception).split(':')[0].strip())

    def explain(self, exception: BaseException) -> BaseException:
        """The error to report for ``exception`` raised by a run with this guard (its own, more precise one for a
        ``FloatingPointError`` raised inside a step)."""
        if isinstance(exception, FloatingPointError) and self.error is not None:
            return self.error
        return exception
