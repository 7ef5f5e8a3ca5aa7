"""``PcDartsStrategy``: PC-DARTS (partial channel connections + edge normalisation) as an NNI 3.0 one-shot strategy."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterator, List, Optional, Tuple

from nni.nas.space import RawFormatModelSpace

from ..oneshot.mixed import EdgeNormalizedInput, is_cell_node_input
from ..oneshot.partial_channel import DEFAULT_K, check_partial_channel_space, partial_channel_hook
from .darts import DartsStrategy

__all__ = ['PcDartsStrategy', 'PC_DARTS_WEIGHT_RECIPE', 'scaled_warmup_epochs']

_logger = logging.getLogger(__name__)

# The weight side of the PC-DARTS CIFAR-10 search (yuhuixu1993/PC-DARTS train_search.py; an evaluator setting, not
# the strategy's): SGD lr 0.1, momentum 0.9, wd 3e-4, cosine to 0 (V100_python1.0 version: 0.001), batch 256,
# 50 epochs, train portion 0.5, gradient clip 5.
PC_DARTS_WEIGHT_RECIPE: Dict[str, Any] = {
    'batch_size': 256, 'learning_rate': 0.1, 'learning_rate_min': 0.0, 'momentum': 0.9, 'weight_decay': 3e-4,
    'max_epochs': 50,
}
REFERENCE_WARMUP_EPOCHS = 15  # train_search.py: ``if epoch >= 15: architect.step(...)``
REFERENCE_EPOCHS = 50


def scaled_warmup_epochs(max_epochs: int, warmup_epochs: int = REFERENCE_WARMUP_EPOCHS,
                         reference_epochs: int = REFERENCE_EPOCHS) -> int:
    """The warm-up for a search of ``max_epochs``: the reference fraction (15 of 50 epochs) of it, rounded, and
    always leaving at least one epoch of architecture updates (0 for a 1-epoch search)."""
    if max_epochs < 1:
        raise ValueError(f'max_epochs={max_epochs} is invalid; allowed: an integer >= 1.')
    scaled = math.floor(warmup_epochs * max_epochs / reference_epochs + 0.5)
    return max(0, min(scaled, max_epochs - 1))


class PcDartsStrategy(DartsStrategy):
    """PC-DARTS (Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search",
    ICLR 2020) on a :class:`~nni_darts_ext.DartsCellSpace`.

    - **Partial channels**: every edge ``LayerChoice`` becomes a
      :class:`~nni_darts_ext.oneshot.partial_channel.PartialChannelMixedLayer`: the first C/K channels go through the
      candidate ops, rebuilt from the op registry on C/K channels (the full-width candidates of the space are not
      used during the search), the rest bypass them (max-pooled on stride-2 edges), then a channel shuffle.
      Memory of the mixed ops drops about K-fold.
    - **Edge normalisation**: a node is Σ_i softmax(β)_i · ō_i(x_i), β learned with α by the architecture Adam
      (:class:`~nni_darts_ext.oneshot.mixed.EdgeNormalizedInput`).
    - **Export**: edge score softmax(β)_i · softmax(α_i)_o without ``none``, top-2 edges per node, each with its
      strongest non-``none`` op. The result is the arch dict (labels and op names) of the *full-width* space:
      ``space.freeze(arch)`` / ``export_top_models(formatter='instance')`` build the full-width model, never the
      C/K supernet ops.

    A space the partial-channel op cannot apply to (a ``LayerChoice`` without the registry metadata
    ``edge_spec``, C not divisible by ``k``) is refused before training by one
    :class:`~nni_darts_ext.oneshot.partial_channel.PartialChannelError` naming each such choice and the reason.

    **NAS-Bench-201** (:class:`~nni_darts_ext.groundtruth.space.NasBench201Grey`): its edges carry an ``edge_spec``
    with NNI's own op builder, so the candidates are NNI's NAS-Bench-201 ops rebuilt on C/K channels. Its cell has no
    ``InputChoice`` (a node sums all its incoming edges inside NNI's cell, which is not changed), so there PC-DARTS is
    **partial channels only, without edge normalisation** (β has nothing to select: every edge is kept), and the
    export is the strongest non-``none`` op per edge, as :class:`DartsStrategy`'s (an info line is logged).

    Defaults are those of the PC-DARTS CIFAR-10 search (paper §4.1 and yuhuixu1993/PC-DARTS ``train_search.py``):

    Parameters
    ----------
    k
        Channel proportion 1/K through the ops (4 on CIFAR, ``MixedOp.k``; 2 on ImageNet). ``k=1`` is DARTS with
        edge normalisation.
    order
        1 (default; "our method is constructed based on DARTS (1st order) (unrolled=false)",
        github.com/yuhuixu1993/PC-DARTS/issues/23) or 2 (DARTS' unrolled gradient, also supported).
    arc_learning_rate, arc_betas, arc_weight_decay
        Adam for α and β: 6e-4, (0.5, 0.999), 1e-3 (``--arch_learning_rate``, ``architect.py``).
    gradient_clip_val
        Weight-gradient norm clip, 5 (``--grad_clip``).
    arc_gradient_clip_val
        α/β-gradient norm clip, off (as the reference).
    warmup_epochs
        Weight-only epochs with α and β frozen: 15 of the reference 50 (``if epoch >= 15: architect.step``).
        **Short searches must scale it down**, or α is never trained (``ValueError`` when
        ``warmup_epochs >= max_epochs``, naming both): the CLI's CPU presets pass
        ``warmup_epochs=scaled_warmup_epochs(epochs)``,
        the reference fraction 15/50 of the epochs, rounded, leaving at least one epoch of architecture updates
        (e.g. 10 epochs -> 3, 3 epochs -> 1, 1 epoch -> 0).
    xi, hvp, fd_radius
        Second-order settings (see :class:`DartsStrategy`).
    channels_last
        Run the supernet in ``channels_last`` (faster CPU convolutions; the channel shuffle keeps the format).
    **kwargs
        To NNI's ``DARTS`` / ``OneShotStrategy`` (e.g. ``mutation_hooks``).

    The weight side is the evaluator's: the reference uses batch 256, SGD lr 0.1, momentum 0.9, wd 3e-4, cosine
    to 0, 50 epochs on half of the CIFAR-10 training set (:data:`PC_DARTS_WEIGHT_RECIPE`).
    """

    weight_recipe = 'pcdarts'

    def __init__(self, *, k: int = DEFAULT_K, order: int = 1, arc_learning_rate: float = 6e-4,
                 arc_betas: Tuple[float, float] = (0.5, 0.999), arc_weight_decay: float = 1e-3,
                 gradient_clip_val: Optional[float] = 5.0, arc_gradient_clip_val: Optional[float] = None,
                 warmup_epochs: int = REFERENCE_WARMUP_EPOCHS, xi: Optional[float] = None,
                 hvp: str = 'finite_difference', fd_radius: float = 0.01, channels_last: bool = True,
                 **kwargs: Any):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f'k={k!r} is invalid; allowed: an integer >= 1 (PC-DARTS: 4 on CIFAR, 2 on ImageNet).')
        self.k = k
        super().__init__(order=order, arc_learning_rate=arc_learning_rate, arc_betas=arc_betas,
                         arc_weight_decay=arc_weight_decay, gradient_clip_val=gradient_clip_val,
                         arc_gradient_clip_val=arc_gradient_clip_val, warmup_epochs=warmup_epochs, xi=xi, hvp=hvp,
                         fd_radius=fd_radius, channels_last=channels_last, **kwargs)

    def default_mutation_hooks(self) -> List[Any]:
        return [partial_channel_hook(self.k), EdgeNormalizedInput.mutate, *super().default_mutation_hooks()]

    def mutate_model(self, model):
        # every unsupported choice in one error, before any parameter or supernet module is created
        check_partial_channel_space(model, self.k)
        if not any(is_cell_node_input(m) for m in model.modules()):
            _logger.info('PcDartsStrategy: %s has no cell-node InputChoice (e.g. NAS-Bench-201, whose nodes sum all '
                         'their edges): partial channels only (k=%d), no edge normalisation.', type(model).__name__,
                         self.k)
        return super().mutate_model(model)

    def mutate_evaluator(self, evaluator):
        max_epochs = getattr(getattr(evaluator, 'trainer', None), 'max_epochs', None)
        if isinstance(max_epochs, int) and 0 < max_epochs <= self.config.warmup_epochs:
            # an error, not a warning before a random export
            raise ValueError(f'PcDartsStrategy: warmup_epochs={self.config.warmup_epochs} >= the evaluator\'s '
                             f'max_epochs={max_epochs}, so α and β would never be trained and the export would be '
                             f'random; pass warmup_epochs < max_epochs (e.g. PcDartsStrategy(warmup_epochs='
                             f'{scaled_warmup_epochs(max_epochs)}), the reference 15/50 of the epochs) or train '
                             'for more epochs.')
        return super().mutate_evaluator(evaluator)

    def list_models(self, sort: bool = True, limit: Optional[int] = 1) -> Iterator[RawFormatModelSpace]:
        """The exported arch on the full-width space (a space whose ``freeze`` does not rebuild from its arguments,
        unlike ``DartsCellSpace``, is re-created from its recorded arguments first, so that its supernet C/K ops
        are never frozen into the result)."""
        for model in super().list_models(sort=sort, limit=limit):
            space = model.model_space
            if not hasattr(space, 'init_arguments'):
                fresh = type(space)(*getattr(space, 'trace_args', ()), **getattr(space, 'trace_kwargs', {}))
                model = RawFormatModelSpace(fresh, model.evaluator).freeze(model.sample)
            yield model
