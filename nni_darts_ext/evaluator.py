"""The reference weight recipes as NNI evaluators (DARTS: SGD lr 0.025, momentum 0.9, wd 3e-4, cosine to 0.001)."""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple, Type

import nni
import torch
import torch.nn as nn
import torchmetrics
from nni.nas.evaluator.pytorch import Lightning, Trainer
from nni.nas.evaluator.pytorch.lightning import SupervisedLearningModule

from .settings import WEIGHT_RECIPES

__all__ = ['DartsWeightModule', 'DartsClassification', 'search_evaluator', 'WEIGHT_RECIPES', 'cosine_period']

_logger = logging.getLogger(__name__)



def cosine_period(trainer: Any) -> Tuple[int, str]:
    """Length and unit of the cosine schedule: ``(max_epochs, 'epoch')`` as the references, or with
    ``max_epochs=-1`` ``(max_steps, 'step')`` (not a period of one epoch); neither finite is an error."""
    max_epochs = getattr(trainer, 'max_epochs', None)
    if max_epochs is not None and max_epochs > 0:
        return max_epochs, 'epoch'
    max_steps = getattr(trainer, 'max_steps', -1)
    if max_steps is not None and max_steps > 0:
        return max_steps, 'step'
    raise ValueError(f'The cosine learning-rate schedule needs a finite length, but the Trainer has max_epochs='
                     f'{max_epochs} and max_steps={max_steps}: give the Trainer max_epochs (or max_steps).')


@nni.trace
class DartsWeightModule(SupervisedLearningModule):
    """Classification with a reference search recipe for the weights (quark0/darts train_search.py by default).

    ``recipe`` names the recipe the numbers came from (``'darts'``, ``'pdarts'``, ``'pcdarts'``, or ``'custom'``);
    the strategies warn when it is another strategy's.
    """

    def __init__(self, num_classes: int, learning_rate: float = 0.025, momentum: float = 0.9,
                 weight_decay: float = 3e-4, learning_rate_min: float = 0.001,
                 criterion: Type[nn.Module] = nn.CrossEntropyLoss, recipe: str = 'darts'):
        super().__init__(criterion, {'acc': torchmetrics.Accuracy('multiclass', num_classes=num_classes)},
                         learning_rate=learning_rate, weight_decay=weight_decay, optimizer=torch.optim.SGD,
                         export_onnx=False)
        self.momentum = momentum
        self.learning_rate_min = learning_rate_min
        self.recipe = recipe

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=self.momentum,
                                    weight_decay=self.hparams.weight_decay)
        period, interval = cosine_period(self.trainer)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=period, eta_min=self.learning_rate_min)
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': interval}}


@nni.trace
class DartsClassification(Lightning):
    """NNI evaluator: :class:`DartsWeightModule` + a Lightning ``Trainer(**trainer_kwargs)``.

    Pass the search split as a ``datamodule`` (:class:`~nni_darts_ext.data.DartsDataModule`), or as
    ``train_dataloaders`` (weights) and ``val_dataloaders`` (architecture).
    """

    def __init__(self, num_classes: int, learning_rate: float = 0.025, momentum: float = 0.9,
                 weight_decay: float = 3e-4, learning_rate_min: float = 0.001, train_dataloaders: Any = None,
                 val_dataloaders: Any = None, datamodule: Any = None, recipe: str = 'darts', **trainer_kwargs: Any):
        module = DartsWeightModule(num_classes, learning_rate, momentum, weight_decay, learning_rate_min,
                                   recipe=recipe)
        from .quiet import during_search
        with during_search():  # no Lightning inventory / tip lines at the user's evaluator line
            trainer = Trainer(**trainer_kwargs)
        super().__init__(module, trainer, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders,
                         datamodule=datamodule)


def search_evaluator(dataset: str = 'fashion-mnist', *, recipe: str = 'darts', batch_size: Optional[int] = None,
                     subset: Optional[int] = None, seed: int = 0, root: Optional[str] = None, max_epochs: int = 50,
                     learning_rate: Optional[float] = None, learning_rate_min: Optional[float] = None,
                     momentum: float = 0.9, weight_decay: float = 3e-4, augment: bool = True,
                     num_workers: int = 0, pin_memory: bool = False,
                     **trainer_kwargs: Any) -> DartsClassification:
    """A search evaluator on a named dataset's search split (half the training set each for w and α), given as a
    :class:`~nni_darts_ext.data.DartsDataModule`.

    ``recipe`` picks the reference weight recipe of a strategy (:data:`WEIGHT_RECIPES`: ``'darts'``, ``'pdarts'``,
    ``'pcdarts'``); ``batch_size``, ``learning_rate``, ``learning_rate_min`` override it (the recipe is then
    recorded as ``'custom'``). ``augment``: random crop (and flip) on both halves, as the reference searches.
    """
    from .data import DartsDataModule
    if recipe not in WEIGHT_RECIPES:
        raise ValueError(f'recipe={recipe!r} is invalid; allowed: {list(WEIGHT_RECIPES)}.')
    chosen = dict(WEIGHT_RECIPES[recipe])
    overrides = dict(batch_size=batch_size, learning_rate=learning_rate, learning_rate_min=learning_rate_min)
    if any(value is not None and value != chosen[key] for key, value in overrides.items()):
        recipe = 'custom'
    chosen.update({key: value for key, value in overrides.items() if value is not None})
    data = DartsDataModule(dataset, batch_size=chosen['batch_size'], subset=subset, seed=seed, root=root,
                           augment=augment, num_workers=num_workers, pin_memory=pin_memory)
    data.setup()  # a missing dataset fails here, before the search writes anything
    trainer_kwargs.setdefault('enable_model_summary', False)
    return DartsClassification(data.info.num_classes, chosen['learning_rate'], momentum, weight_decay,
                               chosen['learning_rate_min'], datamodule=data, recipe=recipe, max_epochs=max_epochs,
                               **trainer_kwargs)
