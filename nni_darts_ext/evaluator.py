"""The DARTS weight recipe as an NNI evaluator (SGD lr 0.025, momentum 0.9, wd 3e-4, cosine to 0.001)."""
from __future__ import annotations

import logging
from typing import Any, Optional, Type

import nni
import torch
import torch.nn as nn
import torchmetrics
from nni.nas.evaluator.pytorch import Lightning, Trainer
from nni.nas.evaluator.pytorch.lightning import SupervisedLearningModule

__all__ = ['DartsWeightModule', 'DartsClassification', 'search_evaluator']

_logger = logging.getLogger(__name__)


@nni.trace
class DartsWeightModule(SupervisedLearningModule):
    """Classification with the DARTS search recipe for the weights (quark0/darts train_search.py)."""

    def __init__(self, num_classes: int, learning_rate: float = 0.025, momentum: float = 0.9,
                 weight_decay: float = 3e-4, learning_rate_min: float = 0.001,
                 criterion: Type[nn.Module] = nn.CrossEntropyLoss):
        super().__init__(criterion, {'acc': torchmetrics.Accuracy('multiclass', num_classes=num_classes)},
                         learning_rate=learning_rate, weight_decay=weight_decay, optimizer=torch.optim.SGD,
                         export_onnx=False)
        self.momentum = momentum
        self.learning_rate_min = learning_rate_min

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=self.momentum,
                                    weight_decay=self.hparams.weight_decay)
        epochs = max(1, self.trainer.max_epochs or 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=self.learning_rate_min)
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': 'epoch'}}


@nni.trace
class DartsClassification(Lightning):
    """NNI evaluator: :class:`DartsWeightModule` + a Lightning ``Trainer(**trainer_kwargs)``.

    Pass the search split as ``train_dataloaders`` (weights) and ``val_dataloaders`` (architecture).
    """

    def __init__(self, num_classes: int, learning_rate: float = 0.025, momentum: float = 0.9,
                 weight_decay: float = 3e-4, learning_rate_min: float = 0.001, train_dataloaders: Any = None,
                 val_dataloaders: Any = None, datamodule: Any = None, **trainer_kwargs: Any):
        module = DartsWeightModule(num_classes, learning_rate, momentum, weight_decay, learning_rate_min)
        super().__init__(module, Trainer(**trainer_kwargs), train_dataloaders=train_dataloaders,
                         val_dataloaders=val_dataloaders, datamodule=datamodule)


def search_evaluator(dataset: str = 'fashion-mnist', *, batch_size: int = 64, subset: Optional[int] = None,
                     seed: int = 0, root: Optional[str] = None, max_epochs: int = 50, learning_rate: float = 0.025,
                     learning_rate_min: float = 0.001, momentum: float = 0.9, weight_decay: float = 3e-4,
                     num_workers: int = 0, pin_memory: bool = False, **trainer_kwargs: Any) -> DartsClassification:
    """The DARTS search evaluator on a named dataset's search split (half the training set each for w and α)."""
    from .data import get_info, search_dataloaders
    info = get_info(dataset)
    train_loader, val_loader = search_dataloaders(dataset, batch_size=batch_size, subset=subset, seed=seed, root=root,
                                                  num_workers=num_workers, pin_memory=pin_memory)
    trainer_kwargs.setdefault('enable_model_summary', False)
    return DartsClassification(info.num_classes, learning_rate, momentum, weight_decay, learning_rate_min,
                               train_dataloaders=train_loader, val_dataloaders=val_loader, max_epochs=max_epochs,
                               **trainer_kwargs)
