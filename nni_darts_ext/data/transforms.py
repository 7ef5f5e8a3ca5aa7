"""The training and evaluation transforms of a dataset, and :class:`Cutout`."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .registry import DEFAULT_DATASET, DatasetInfo, get_info

__all__ = ["Cutout", "search_transform", "test_transform", "train_transform"]


class Cutout:
    """Zero a random ``length`` x ``length`` square of a ``(C, H, W)`` tensor (DeVries & Taylor; 0: identity).

    As in the DARTS code the centre is uniform over the image and the square is clipped at the borders. Apply it
    after ``Normalize``; it draws from torch's global generator (seeded per loader worker).
    """

    def __init__(self, length: int) -> None:
        if int(length) < 0:
            raise ValueError(f"Cutout length must be >= 0, got {length}")
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.length == 0:
            return img
        h, w = img.shape[-2], img.shape[-1]
        y, x = int(torch.randint(h, ()).item()), int(torch.randint(w, ()).item())
        half, rest = self.length // 2, self.length // 2 + self.length % 2
        out = img.clone()
        out[..., max(y - half, 0):min(y + rest, h), max(x - half, 0):min(x + rest, w)] = 0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


def train_transform(info: str | DatasetInfo = DEFAULT_DATASET, augment: bool = True,
                    cutout: int = 0) -> Callable[[Any], torch.Tensor]:
    """``ToTensor``; with ``augment`` a random crop with zero padding (``info.crop_padding``) and, where
    ``info.hflip`` (CIFAR-10, Fashion-MNIST), a random horizontal flip; ``Normalize``; :class:`Cutout` when
    ``cutout > 0`` (DARTS: 16 on CIFAR-10)."""
    from torchvision import transforms as T

    info = get_info(info)
    steps: list[Any] = [T.ToTensor()]
    if augment:
        steps.append(T.RandomCrop(info.image_size, padding=info.crop_padding))
        if info.hflip:
            steps.append(T.RandomHorizontalFlip())
    steps.append(T.Normalize(info.mean, info.std))
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def test_transform(info: str | DatasetInfo = DEFAULT_DATASET) -> Callable[[Any], torch.Tensor]:
    """``ToTensor`` then ``Normalize``: evaluation, and the search without augmentation."""
    return train_transform(info, augment=False)


search_transform = test_transform
