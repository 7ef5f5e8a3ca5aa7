"""``DartsStrategy``: first- and second-order DARTS as an NNI 3.0 one-shot strategy."""
from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch.nn as nn
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import DARTS

from ..oneshot.mixed import DartsMixedInput, DartsMixedLayer
from ..oneshot.module import DartsSearchConfig, DartsSearchModule
from ..oneshot.perturbation import SELECTIONS, PerturbationSelector, SelectionResult
from ..quiet import during_search, user_stacklevel

__all__ = ['DartsStrategy']

_logger = logging.getLogger(__name__)


class DartsStrategy(DARTS):
    """DARTS (Liu et al., ICLR 2019) on any NNI ``ModelSpace`` of ``LayerChoice`` / ``InputChoice``.

    Every ``LayerChoice`` becomes a softmax(α)-weighted mixed op. A cell node's ``InputChoice`` (as in
    :class:`~nni_darts_ext.DartsCellSpace`) sums all incoming edges and keeps, at export, the two edges with the
    strongest non-``none`` op, as the original DARTS; any other ``InputChoice`` keeps NNI's weighted input.

    Parameters
    ----------
    order
        1: first order (ξ = 0); 2: one unrolled weight step with the finite-difference Hessian-vector product.
    arc_learning_rate, arc_betas, arc_weight_decay
        Adam for α (DARTS: 3e-4, (0.5, 0.999), 1e-3).
    gradient_clip_val
        Weight-gradient norm clip (DARTS: 5).
    arc_gradient_clip_val
        α-gradient norm clip (off in DARTS).
    warmup_epochs
        Weight-only epochs before α is trained.
    xi
        Unrolling step; ``None`` uses the weight optimiser's current learning rate with its momentum buffer and
        weight decay (DARTS). Adam (NNI ``Classification``) has no momentum buffer: the virtual step is plain SGD.
    hvp
        ``'finite_difference'`` (DARTS eq. 8, ε = fd_radius/‖∇w' L_val‖) or ``'exact'`` (double backward).
    fd_radius
        r of the finite difference (DARTS §2.3: ε = r / ‖∇w' L_val‖, r = 0.01).
    channels_last
        Run the supernet in ``channels_last`` memory format (faster convolutions on CPU).
    beta_decay
        λ of β-DARTS' Beta-Decay regularisation: the α loss gains λ_t · mean over edges of logsumexp(α), λ_t rising
        linearly from 0 to λ over the epochs (:mod:`~nni_darts_ext.oneshot.regularization`); 0 (default): off.
    smooth
        ε of SDARTS-RS random smoothing: the weight step sees softmax(α) + U[-ε_t, ε_t] (ε_t rising from ε/10 to ε);
        0 (default): off.
    select
        How the architecture is derived after training: ``'magnitude'`` (default; the strongest softmax(α), the
        papers') or ``'perturbation'`` (DARTS-PT, :mod:`~nni_darts_ext.oneshot.perturbation`: edge by edge in a
        random order, the op whose removal lowers the supernet's validation accuracy most; then the same test on
        the inputs of every ``InputChoice``). The decision table is :attr:`selection` after the search.
    select_batches, select_tune_steps, select_seed
        Perturbation selection: validation batches per accuracy (None: all), weight steps of fine-tuning between
        two decisions, seed of the decision order.
    """

    def __init__(self, *, order: int = 1, arc_learning_rate: float = 3e-4,
                 arc_betas: Tuple[float, float] = (0.5, 0.999),
                 arc_weight_decay: float = 1e-3, gradient_clip_val: Optional[float] = 5.0,
                 arc_gradient_clip_val: Optional[float] = None, warmup_epochs: int = 0, xi: Optional[float] = None,
                 hvp: str = 'finite_difference', fd_radius: float = 0.01, channels_last: bool = True,
                 beta_decay: float = 0.0, smooth: float = 0.0, select: str = 'magnitude',
                 select_batches: Optional[int] = 10, select_tune_steps: int = 10, select_seed: int = 0,
                 **kwargs: Any):
        if select not in SELECTIONS:
            raise ValueError(f'select={select!r} is invalid; allowed: {", ".join(map(repr, SELECTIONS))}.')
        if select_batches is not None and select_batches < 1 or select_tune_steps < 0:
            raise ValueError(f'select_batches={select_batches!r} / select_tune_steps={select_tune_steps!r} are '
                             'invalid; allowed: batches >= 1 (or None: all), steps >= 0.')
        self.select, self.select_batches = select, select_batches
        self.select_tune_steps, self.select_seed = select_tune_steps, select_seed
        #: the perturbation selection of the finished search (None with magnitude selection)
        self.selection: Optional[SelectionResult] = None
        self._dataloader_fns: Optional[Tuple[Any, Any]] = None
        self.config = DartsSearchConfig(
            order=order, arc_learning_rate=arc_learning_rate, arc_betas=tuple(arc_betas),
            arc_weight_decay=arc_weight_decay, gradient_clip_val=gradient_clip_val,
            arc_gradient_clip_val=arc_gradient_clip_val, warmup_epochs=warmup_epochs, xi=xi, hvp=hvp,
            fd_radius=fd_radius, channels_last=channels_last, beta_decay=beta_decay, smooth=smooth)
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val,
                         warmup_epochs=warmup_epochs, **kwargs)

    #: the reference weight recipe of this method (``search_evaluator(recipe=...)``)
    weight_recipe = 'darts'

    def check_weight_recipe(self, training_module: Any) -> None:
        """Warn when the evaluator carries another method's reference weight recipe (e.g. DARTS' for PC-DARTS)."""
        recipe = getattr(training_module, 'recipe', None)
        if recipe not in (None, 'custom', self.weight_recipe):
            warnings.warn(f'{type(self).__name__} is given the {recipe!r} weight recipe; the reference search uses '
                          f'{self.weight_recipe!r}: build the evaluator with search_evaluator(..., '
                          f'recipe={self.weight_recipe!r}).', UserWarning, stacklevel=user_stacklevel())

    def run(self, *args: Any, **kwargs: Any) -> Any:
        # Lightning's inventory / tip lines and NNI's "Strategy failed to execute." (the exception says what failed)
        # are hidden while the search runs (quiet.during_search; --verbose / quiet(False) shows them)
        with during_search():
            return super().run(*args, **kwargs)

    def configure_oneshot_module(self, training_module) -> DartsSearchModule:
        self.check_weight_recipe(training_module)
        return DartsSearchModule(training_module, self.config)

    def default_mutation_hooks(self) -> List[Any]:
        return [DartsMixedLayer.mutate, DartsMixedInput.mutate, *super().default_mutation_hooks()]

    def val_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        # the architecture half doubles as the per-epoch validation set of the supernet (DARTS `infer`)
        self._dataloader_fns = (train_dataloader_fn, val_dataloader_fn)  # for the perturbation selection
        return val_dataloader_fn()

    # --- architecture selection (DARTS-PT: Wang et al., ICLR 2021, Alg. 1) --------------------------------------------
    def _run(self) -> None:
        super()._run()
        if self.select == 'perturbation':
            self.selection = self.perturbation_select(self.oneshot_module)

    def perturbation_select(self, module: DartsSearchModule) -> SelectionResult:
        """DARTS-PT on the trained supernet of ``module`` (validation half: accuracies; training half: fine-tuning
        with the search's weight optimiser)."""
        if self._dataloader_fns is None:
            raise RuntimeError('Perturbation selection needs the search\'s data: run the strategy first.')
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise RuntimeError('Perturbation selection runs in one process (each rank would measure its own shard and '
                               'decide differently); search with select=\'magnitude\' under DDP and select afterwards.')
        train_fn, val_fn = self._dataloader_fns
        try:
            optimizer = module.weight_optimizer()
        except Exception as err:  # noqa: BLE001 -- no Trainer any more: select without fine-tuning
            _logger.warning('Perturbation selection without fine-tuning (no weight optimiser: %s).', err)
            optimizer = None
        training_module = module.training_module
        criterion = getattr(training_module, 'criterion', None)
        selector = PerturbationSelector(
            training_module, val_fn, train_fn, eval_batches=self.select_batches, tune_steps=self.select_tune_steps,
            optimizer=optimizer, loss=criterion if callable(criterion) else nn.functional.cross_entropy,
            prepare=module._prepare, gradient_clip_val=self.config.gradient_clip_val, seed=self.select_seed,
            base_arch=getattr(module, 'unrestricted_export', module.export)())
        result = selector.run()
        _logger.info('perturbation selection: %d decisions, discretised supernet accuracy %.4f: %s',
                     len(result.decisions), result.final_acc, result.arch)
        return result

    @property
    def result_extra(self) -> Dict[str, Any]:
        """JSON-friendly results for a search summary: the perturbation selection's table, if any."""
        return {} if self.selection is None else {'selection': self.selection.to_dict()}

    def list_models(self, sort: bool = True, limit: Optional[int] = 1) -> Iterator[RawFormatModelSpace]:
        if self.selection is not None:
            yield self.model_space.freeze(self.selection.arch)
            return
        yield from super().list_models(sort=sort, limit=limit)

    @property
    def search_module(self) -> Optional[DartsSearchModule]:
        """The Lightning module of the running / finished search (None before ``initialize``)."""
        space = getattr(self, '_mutated_model_space', None)
        return None if space is None else space.evaluator.module
