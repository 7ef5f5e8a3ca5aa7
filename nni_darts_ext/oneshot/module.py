"""The Lightning side of the search: the alternating architecture / weight updates (DARTS Alg. 1).

``DartsSearchModule.training_step`` only sequences ``arch_step`` (on the validation batch) and ``weight_step``
(on the training batch); first and second order, warm-up, memory format and logging are seams that the PC-DARTS
and P-DARTS modules reuse or override.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.nn as nn
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

from ..space.genotype import arch_to_genotype, count_skips
from .hypergradient import first_order_hypergradient, unrolled_hypergradient
from .distributed import arch_parameter_names, broadcast_int, gradient_all_reduce
from .regularization import (add_beta_decay, beta_decay_weight, edge_alphas, random_smoothing,
                             smoothing_radius)

__all__ = ['DartsSearchConfig', 'DartsSearchModule', 'replay_random']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DartsSearchConfig:
    """Architecture-side settings of a DARTS-family search (defaults: DARTS paper §3.1.2 / quark0/darts)."""

    order: int = 1                                # 1: ξ = 0; 2: one unrolled step (DARTS eq. 7-8)
    arc_learning_rate: float = 3e-4               # Adam lr for α (DARTS architect.py)
    arc_betas: Tuple[float, float] = (0.5, 0.999)
    arc_weight_decay: float = 1e-3
    gradient_clip_val: Optional[float] = 5.0      # weight-gradient norm clip (DARTS train_search.py)
    arc_gradient_clip_val: Optional[float] = None  # P-DARTS also clips α gradients to 5
    warmup_epochs: int = 0                        # weight-only epochs before α is updated (PC-DARTS: 15)
    xi: Optional[float] = None                    # None: the weight optimiser's current lr (DARTS footnote 2)
    hvp: str = 'finite_difference'                # or 'exact' (double backward)
    fd_radius: float = 0.01                       # ε = fd_radius / ‖∇w' L_val‖ (DARTS §2.3)
    channels_last: bool = True                    # faster convolutions on CPU (README, Benchmarks)
    beta_decay: float = 0.0                       # β-DARTS λ (regularization.py); 0: off
    smooth: float = 0.0                           # SDARTS-RS ε (regularization.py); 0: off

    def __post_init__(self):
        if self.order not in (1, 2):
            raise ValueError(f'order={self.order!r} is invalid; allowed: 1 (first order) or 2 (second order).')
        if self.hvp not in ('finite_difference', 'exact'):
            raise ValueError(f"hvp={self.hvp!r} is invalid; allowed: 'finite_difference' or 'exact'.")
        if self.warmup_epochs < 0:
            raise ValueError(f'warmup_epochs={self.warmup_epochs} is invalid; allowed: an integer >= 0.')
        if self.arc_learning_rate <= 0:
            raise ValueError(f'arc_learning_rate={self.arc_learning_rate} is invalid; allowed: > 0.')
        if self.fd_radius <= 0:
            raise ValueError(f'fd_radius={self.fd_radius} is invalid; allowed: > 0 (DARTS: 0.01).')
        if not self.beta_decay >= 0:
            raise ValueError(f'beta_decay={self.beta_decay} is invalid; allowed: >= 0 (0: off; β-DARTS: 25 at 50 '
                             'epochs).')
        if not 0 <= self.smooth <= 1:
            raise ValueError(f'smooth={self.smooth} is invalid; allowed: 0 <= smooth <= 1 (0: off; SDARTS-RS: 0.3).')

    def replace(self, **changes: Any) -> 'DartsSearchConfig':
        return dataclasses.replace(self, **changes)


def _to_channels_last(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_channels_last(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_channels_last(v) for k, v in batch.items()}
    return batch


def _loss_of(output: Any) -> torch.Tensor:
    loss = output['loss'] if isinstance(output, dict) else output
    if not torch.isfinite(loss):
        raise FloatingPointError(f'The search loss is {loss.item()}: lower the learning rates '
                                 '(weights or arc_learning_rate) or check the input data for NaN/inf.')
    return loss


def replay_random(closure: Callable[[], Any], seed: int, device: torch.device) -> Callable[[], Any]:
    """``closure`` under a fixed RNG seed: every call draws the same random numbers (dropout masks such as P-DARTS'
    skip-connect dropout, drop-path, a user's ``nn.Dropout``), so the passes of one unrolled α step evaluate the same
    function and the finite difference of DARTS eq. 8 measures the weight change, not mask changes. The global RNG
    state is restored after each call."""
    devices = [device] if device.type == 'cuda' else []

    def call() -> Any:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return closure()
    return call


class DartsSearchModule(DartsLightningModule):
    """DARTS search loop with first- or second-order architecture gradients.

    The evaluator's module owns the weights, their optimiser and scheduler (as in NNI); this module owns α's Adam.
    Second order takes ξ, the momentum buffers and the weight decay from the weight optimiser (SGD in the DARTS
    recipe); an optimiser without momentum (NNI ``Classification``'s Adam) contributes no momentum term.
    """

    def __init__(self, training_module: nn.Module, config: DartsSearchConfig):
        super().__init__(training_module, arc_learning_rate=config.arc_learning_rate,
                         gradient_clip_val=config.gradient_clip_val,
                         warmup_epochs=config.warmup_epochs)
        self.config = config
        self.genotype_history: List[Any] = []
        self.zero_direction_steps = 0  # order-2 α steps of this epoch with ∇_w' L_val(w', α) = 0 (in the history)
        self._zero_direction_logged = False

    # --- optimisers ---------------------------------------------------------------------------------------------
    def configure_architecture_optimizers(self):
        alphas = self.arch_parameters()
        if not alphas:
            raise ValueError('No architecture parameters found: the space has no LayerChoice/InputChoice to search.')
        return torch.optim.Adam(alphas, self.config.arc_learning_rate, betas=self.config.arc_betas,
                                weight_decay=self.config.arc_weight_decay)

    def arch_parameters(self) -> List[nn.Parameter]:
        # deterministic order (the parent returns a set's order), so optimiser states line up on resume and DDP
        seen, params = set(), []
        for module in self.supernet_modules():
            for p in getattr(module, 'arch_parameters', lambda: [])():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def weight_optimizer(self) -> torch.optim.Optimizer:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        weight_opts = [o for o in optimizers if not getattr(o, 'is_arch_optimizer', False)]
        opt = weight_opts[0]
        return getattr(opt, 'optimizer', opt)

    # --- data parallel (docs/distributed.md) --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Called before Lightning wraps the module in DistributedDataParallel: α/β stay out of DDP's reducer (their
        # gradients are set by hand in arch_step and averaged there; the weight step does not compute them, which
        # DDP without find_unused_parameters would wait for).
        self._ddp_params_and_buffers_to_ignore = arch_parameter_names(self, self.arch_parameters())
        return super().setup(stage)

    # --- the loop -------------------------------------------------------------------------------------------------
    def on_fit_start(self):
        if self.config.channels_last:
            self.training_module.to(memory_format=torch.channels_last)
        return super().on_fit_start()

    def on_fit_end(self):
        # A fit resumed from the checkpoint of its last epoch (a run killed after that checkpoint, before its results
        # were written) runs no batch: the wrapped module's final NNI report would read a metric that was never
        # logged (KeyError 'train_acc'). The search's outputs come from α and the restored per-epoch history.
        if not self.trainer.callback_metrics:  # nothing logged in this process
            _logger.info('The fit resumed at its end (epoch %d): no batch ran, no final metric to report.',
                         self.trainer.current_epoch)
            return None
        return super().on_fit_end()

    def on_train_start(self):
        # With max_epochs=-1 the weight cosine runs per batch over max_steps (evaluator.cosine_period); Lightning counts
        # optimizer steps, two per batch once α trains, so convert max_steps into the batches this fit will run.
        max_steps, batches = self.trainer.max_steps, self.trainer.num_training_batches
        if max_steps and max_steps > 0 and (self.trainer.max_epochs or 0) <= 0 and math.isfinite(batches):
            warm = self.config.warmup_epochs * int(batches)
            total = max_steps if max_steps <= warm else warm + math.ceil((max_steps - warm) / 2)
            for config in self.trainer.lr_scheduler_configs:
                if config.interval == 'step' and hasattr(config.scheduler, 'T_max'):
                    config.scheduler.T_max = total
        return super().on_train_start()

    def _prepare(self, batch: Any) -> Any:
        return _to_channels_last(batch) if self.config.channels_last else batch

    def search_progress(self) -> float:
        """e / E: the fraction of the search's epochs done at the start of this epoch (the β-decay and smoothing
        schedules); by steps when the Trainer runs by ``max_steps``."""
        trainer = self.trainer
        if (trainer.max_epochs or 0) > 0:
            return trainer.current_epoch / trainer.max_epochs
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.global_step / trainer.max_steps
        return 0.0

    def arch_update_enabled(self) -> bool:
        return self.trainer.current_epoch >= self.config.warmup_epochs

    def training_step(self, batch, batch_idx):
        trn_batch, val_batch = self._prepare(batch['train']), self._prepare(batch['val'])
        if self.arch_update_enabled():
            self.arch_step(trn_batch, val_batch, batch_idx)
        output = self.weight_step(trn_batch, batch_idx)
        self.advance_lr_schedulers(batch_idx)  # softmax(α): callbacks.ArchitectureLogger, not NNI's prob/*
        return output

    def _loss(self, batch: Any, step_idx: int) -> torch.Tensor:
        return _loss_of(self.training_module.training_step(batch, step_idx))

    def arch_step(self, trn_batch: Any, val_batch: Any, batch_idx: int) -> None:
        """One Adam step on α with ∇_α L_val(w, α) (order 1) or the unrolled gradient (order 2, DARTS eq. 7-8)."""
        arc_optim = self.architecture_optimizers()
        alphas = [p for group in arc_optim.param_groups for p in group['params'] if p.requires_grad]
        self.resample()
        arc_optim.zero_grad()
        # under DDP: the gradients of the global batch on every rank (weights are synced by manual_backward, α here)
        all_reduce = gradient_all_reduce()
        if self.config.order == 1:
            # gradients w.r.t. alpha only: the weight-gradient convolutions of this pass would be wasted work
            grads = first_order_hypergradient(alphas, lambda: self._loss(val_batch, 2 * batch_idx),
                                              all_reduce=all_reduce)
        else:
            w_optim = self.weight_optimizer()
            group = w_optim.param_groups[0]
            weights = [p for g in w_optim.param_groups for p in g['params'] if p.requires_grad]
            # one seed per α step, drawn from the global generator (so runs stay reproducible): every pass of
            # the step sees the same random masks (else P-DARTS' skip dropout draws other masks at w ± εv and
            # DARTS eq. 8 measures noise)
            # (rank 0's seed on every rank under DDP)
            seed = broadcast_int(int(torch.randint(0, 2 ** 62, (1,)).item()))
            grads = unrolled_hypergradient(
                weights, alphas,
                train_loss=replay_random(lambda: self._loss(trn_batch, 2 * batch_idx + 1), seed, self.device),
                val_loss=replay_random(lambda: self._loss(val_batch, 2 * batch_idx), seed + 1, self.device),
                xi=self.config.xi if self.config.xi is not None else group['lr'],
                momentum=group.get('momentum', 0.0) or 0.0,
                momentum_buffers=[w_optim.state.get(p, {}).get('momentum_buffer') for p in weights],
                weight_decay=group.get('weight_decay', 0.0) or 0.0,
                hvp=self.config.hvp, r=self.config.fd_radius, all_reduce=all_reduce,
                on_zero_direction=self._zero_direction_step)
        if self.config.beta_decay:  # β-DARTS: + λ_t · mean_e logsumexp(α_e), independent of w (regularization.py)
            grads = add_beta_decay(alphas, grads, edge_alphas(list(self.supernet_modules())),
                                   beta_decay_weight(self.config.beta_decay, self.search_progress()))
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        if self.config.arc_gradient_clip_val:
            nn.utils.clip_grad_norm_(alphas, self.config.arc_gradient_clip_val)
        arc_optim.step()

    def _zero_direction_step(self) -> None:
        """An order-2 α step whose ∇_w' L_val(w', α) is exactly 0: its hypergradient is ∇_α L_val(w', α)
        (hypergradient.unrolled_hypergradient); counted per epoch in the history, logged once."""
        self.zero_direction_steps += 1
        if not self._zero_direction_logged:
            self._zero_direction_logged = True
            _logger.warning("epoch %d, batch %d: ‖∇_w' L_val(w', α)‖ = 0 (the validation loss does not depend on the "
                            "weights on this batch): the α step uses ∇_α L_val(w', α), the Hessian-vector product "
                            'being 0. Logged once; the history counts such steps per epoch.',
                            self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_idx)

    def weight_step(self, trn_batch: Any, batch_idx: int) -> Any:
        """One step of the evaluator's weight optimiser on the training batch (gradient norm clipped)."""
        self.resample()
        alphas = [p for p in self.arch_parameters() if p.requires_grad]
        for alpha in alphas:  # alpha's gradient is not used by the weight step: do not compute it
            alpha.requires_grad_(False)
        try:
            # SDARTS-RS: the weights are trained on softmax(α) + δ, δ ~ U[-ε_t, ε_t] (a no-op when smooth = 0)
            with (random_smoothing(list(self.supernet_modules()),
                                   smoothing_radius(self.config.smooth, self.search_progress()))
                  if self.config.smooth else contextlib.nullcontext()):
                output = self.training_module.training_step(trn_batch, 2 * batch_idx + 1)
                self.advance_optimization(_loss_of(output), batch_idx, self.gradient_clip_val)
        finally:
            for alpha in alphas:
                alpha.requires_grad_(True)
        return output

    # --- validation: supernet accuracy and the genotype of every epoch --------------------------------------------
    def validation_step(self, batch, batch_idx):
        return self.training_module.validation_step(self._prepare(batch), batch_idx)

    def on_validation_epoch_end(self):
        self.training_module.on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        self.log_architecture()

    def log_architecture(self) -> None:
        """Log the current exported architecture (and its genotype, skip count) each epoch."""
        arch = self.export()
        try:
            genotype = arch_to_genotype(arch)
        except ValueError:  # not a DartsCellSpace: log the arch dict
            genotype = None
        epoch = self.trainer.current_epoch
        acc = self.trainer.callback_metrics.get('val_acc')
        text = str(genotype) if genotype is not None else str(arch)
        record = {'epoch': epoch, 'arch': arch, 'genotype': genotype, 'val_acc': None if acc is None else float(acc)}
        if self.zero_direction_steps:
            record['zero_direction_steps'] = self.zero_direction_steps
            self.zero_direction_steps = 0
        self.genotype_history.append(record)
        _logger.info('epoch %d: supernet val_acc %s, %s %s', epoch, 'n/a' if acc is None else f'{float(acc):.4f}',
                     'genotype' if genotype is not None else 'arch', text)
        if genotype is not None:
            self.log('normal_skip_connects', float(count_skips(genotype, 'normal')))
        experiment = getattr(self.logger, 'experiment', None)
        if hasattr(experiment, 'add_text'):
            experiment.add_text('genotype', text, global_step=epoch)
