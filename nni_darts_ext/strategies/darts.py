"""``DartsStrategy``: first- and second-order DARTS as an NNI 3.0 one-shot strategy."""
from __future__ import annotations

import logging
import warnings
from typing import Any, List, Optional, Tuple

from nni.nas.strategy import DARTS

from ..oneshot.mixed import DartsMixedInput, DartsMixedLayer
from ..oneshot.module import DartsSearchConfig, DartsSearchModule

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
    channels_last
        Run the supernet in ``channels_last`` memory format (faster convolutions on CPU).
    """

    def __init__(self, *, order: int = 1, arc_learning_rate: float = 3e-4,
                 arc_betas: Tuple[float, float] = (0.5, 0.999),
                 arc_weight_decay: float = 1e-3, gradient_clip_val: Optional[float] = 5.0,
                 arc_gradient_clip_val: Optional[float] = None, warmup_epochs: int = 0, xi: Optional[float] = None,
                 hvp: str = 'finite_difference', fd_radius: float = 0.01, channels_last: bool = True,
                 **kwargs: Any):
        self.config = DartsSearchConfig(
            order=order, arc_learning_rate=arc_learning_rate, arc_betas=tuple(arc_betas),
            arc_weight_decay=arc_weight_decay, gradient_clip_val=gradient_clip_val,
            arc_gradient_clip_val=arc_gradient_clip_val, warmup_epochs=warmup_epochs, xi=xi, hvp=hvp,
            fd_radius=fd_radius, channels_last=channels_last)
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
                          f'recipe={self.weight_recipe!r}).', UserWarning, stacklevel=3)

    def configure_oneshot_module(self, training_module) -> DartsSearchModule:
        self.check_weight_recipe(training_module)
        return DartsSearchModule(training_module, self.config)

    def default_mutation_hooks(self) -> List[Any]:
        return [DartsMixedLayer.mutate, DartsMixedInput.mutate, *super().default_mutation_hooks()]

    def val_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        # the architecture half doubles as the per-epoch validation set of the supernet (DARTS `infer`)
        return val_dataloader_fn()

    @property
    def search_module(self) -> Optional[DartsSearchModule]:
        """The Lightning module of the running / finished search (None before ``initialize``)."""
        space = getattr(self, '_mutated_model_space', None)
        return None if space is None else space.evaluator.module
