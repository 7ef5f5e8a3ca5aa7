"""One-shot searches on the ground-truth space: the evaluator on the table's training images, and the search recipe.

The searches see only the table's *training* images, cut in two halves as in DARTS (first half: weights, second
half: α); the validation subset and the test set are the table's, never a search's. The recipe is the project's
``cpu`` preset rule for short searches, the same for every strategy (nothing tuned per method): DARTS' weight SGD
(lr 0.025 cosine to 0.001, momentum 0.9, wd 3e-4) at batch 32, a third of the epochs weight-only, α's Adam learning
rate scaled to the run's α steps (``nni_darts_ext.search.scaled_arc_learning_rate``'s rule).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

import torch
from torch.utils.data import DataLoader, TensorDataset

from .recipe import GroundTruthData

__all__ = ["GroundTruthSearchRecipe", "search_evaluator", "search_halves"]


@dataclass(frozen=True)
class GroundTruthSearchRecipe:
    """The one-shot search budget on the ground truth (the same for every strategy and option)."""

    epochs: int = 6
    batch_size: int = 32                # the cpu preset's
    learning_rate: float = 0.025        # DARTS train_search.py
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    warmup_fraction: float = 1 / 3      # search.SHORT_SEARCH_WARMUP_FRACTION
    pcdarts_k: int = 2                  # the cpu preset's K at C = 8 (4 channels per op, as the reference's C=16, K=4)

    @property
    def warmup_epochs(self) -> int:
        return max(0, min(math.floor(self.epochs * self.warmup_fraction + 0.5), self.epochs - 1))

    def arc_learning_rate(self, strategy: str, images: int) -> float:
        """α's Adam lr by the cpu preset's rule: the short-search α budget over this run's α steps, clamped to
        [the strategy's reference lr, 0.3]."""
        from ..settings import MAX_SCALED_ARC_LR, REFERENCE_ARC_LR, SHORT_SEARCH_ARC_BUDGET

        steps = max(1, self.epochs - self.warmup_epochs) * max(1, (images - images // 2) // self.batch_size)
        return float(min(MAX_SCALED_ARC_LR, max(REFERENCE_ARC_LR[strategy], SHORT_SEARCH_ARC_BUDGET / steps)))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def search_halves(data: GroundTruthData) -> Tuple[TensorDataset, TensorDataset]:
    """(weight half, α half) of the table's training images, as DARTS' ``train_portion = 0.5``."""
    n = len(data.train_x)
    half = n // 2
    return (TensorDataset(data.train_x[:half], data.train_y[:half]),
            TensorDataset(data.train_x[half:], data.train_y[half:]))


def search_evaluator(data: GroundTruthData, recipe: GroundTruthSearchRecipe, seed: int, **trainer_kwargs: Any):
    """A :class:`~nni_darts_ext.evaluator.DartsClassification` on the two halves (shuffled with ``seed``)."""
    from ..evaluator import DartsClassification

    weights, arch = search_halves(data)
    g_w, g_a = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    train = DataLoader(weights, batch_size=recipe.batch_size, shuffle=True, generator=g_w, drop_last=True)
    val = DataLoader(arch, batch_size=recipe.batch_size, shuffle=True, generator=g_a, drop_last=True)
    trainer_kwargs.setdefault("enable_model_summary", False)
    trainer_kwargs.setdefault("enable_progress_bar", False)
    trainer_kwargs.setdefault("logger", False)
    trainer_kwargs.setdefault("enable_checkpointing", False)
    return DartsClassification(data.num_classes, recipe.learning_rate, recipe.momentum, recipe.weight_decay,
                               recipe.learning_rate_min, train_dataloaders=train, val_dataloaders=val,
                               recipe="custom", max_epochs=recipe.epochs, **trainer_kwargs)
