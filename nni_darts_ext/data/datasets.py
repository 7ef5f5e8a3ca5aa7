"""The datasets as torch ``Dataset`` s: :func:`load_dataset`, the search split (:func:`search_split`) and the
retraining sets (:func:`train_set`, :func:`test_set`)."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .prepare import (_CIFAR10_FOLDER, _cifar10_hint, _mnist_hint, _prepare_cifar10, _prepare_fashion_mnist,
                      _raw_ok)
from .registry import _DIGITS_NUM_TEST, DEFAULT_DATASET, DatasetInfo, DatasetNotFoundError, _root, get_info
from .transforms import test_transform, train_transform

__all__ = ["DigitsDataset", "load_dataset", "search_split", "test_set", "train_set"]

_DIGITS_SPLIT_SEED = 0


class DigitsDataset(Dataset):
    """scikit-learn's 8x8 digits / 16, permuted with ``RandomState(0)``: the first 1,437 train, the last 360 test.

    ``transform`` gets a float32 ``8 x 8 x 1`` array (so ``ToTensor`` yields ``1 x 8 x 8``); without it an item is
    that ``1 x 8 x 8`` tensor. ``data`` (N, 8, 8) float32, ``targets`` int64, ``classes`` ``["0", ..., "9"]``.
    """

    def __init__(self, train: bool = True, transform: Callable[[Any], Any] | None = None,
                 target_transform: Callable[[Any], Any] | None = None) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        perm = np.random.RandomState(_DIGITS_SPLIT_SEED).permutation(len(digits.images))
        idx = perm[:-_DIGITS_NUM_TEST] if train else perm[-_DIGITS_NUM_TEST:]
        self.train, self.transform, self.target_transform = train, transform, target_transform
        self.data = np.ascontiguousarray((digits.images / 16.0).astype(np.float32)[idx])
        self.targets = torch.as_tensor(digits.target[idx], dtype=torch.int64)
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = self.data[index][:, :, None]
        out = self.transform(img) if self.transform is not None else torch.from_numpy(img.transpose(2, 0, 1).copy())
        target: Any = int(self.targets[index])
        return out, (self.target_transform(target) if self.target_transform is not None else target)


def load_dataset(name: str | DatasetInfo = DEFAULT_DATASET, *, train: bool = True,
                 transform: Callable[[Any], Any] | None = None, root: str | os.PathLike[str] | None = None,
                 download: bool = False) -> Dataset:
    """The training or test set, items ``(image, label)``, with ``targets`` and ``classes``.

    ``transform`` defaults to :func:`test_transform`. Fashion-MNIST is unpacked from the Debian files first when
    needed; the others must have been prepared (``download``: let torchvision download CIFAR-10). Raises
    :class:`DatasetNotFoundError` (not installed) or ``ValueError`` (unknown name).
    """
    from torchvision import datasets

    info, path = get_info(name), _root(root)
    transform = test_transform(info) if transform is None else transform
    if info.name == "digits":
        return DigitsDataset(train=train, transform=transform)
    if info.name == "fashion-mnist":
        _prepare_fashion_mnist(path)
        return datasets.FashionMNIST(str(path), train=train, transform=transform)
    if info.name == "mnist":
        if not _raw_ok(path / "MNIST" / "raw"):
            raise DatasetNotFoundError("mnist", f"MNIST is not installed: {path / 'MNIST' / 'raw'} does not hold the "
                                       "four IDX files. " + _mnist_hint(path))
        return datasets.MNIST(str(path), train=train, transform=transform)
    _prepare_cifar10(path, download)
    try:
        return datasets.CIFAR10(str(path), train=train, transform=transform)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise DatasetNotFoundError("cifar10", f"CIFAR-10 in {path / _CIFAR10_FOLDER} is incomplete or corrupted "
                                   f"({exc}). " + _cifar10_hint(path)) from exc


def _subset_indices(n: int, subset: int | None, seed: int) -> list[int]:
    """The first ``subset`` of ``randperm(n)`` seeded with ``seed``, or all ``n`` in order."""
    if subset is None or subset >= n:
        return list(range(n))
    if subset <= 0:
        raise ValueError(f"subset must be positive, got {subset}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:subset].tolist()


def _subset(base: Any, subset: int | None, seed: int) -> Dataset:
    return base if subset is None else Subset(base, _subset_indices(len(base), subset, seed))


def search_split(name: str | DatasetInfo = DEFAULT_DATASET, *, subset: int | None = None, seed: int = 0,
                 root: str | os.PathLike[str] | None = None, train_portion: float = 0.5,
                 transform: Callable[[Any], Any] | None = None, augment: bool = False) -> tuple[Subset, Subset]:
    """The DARTS search split: ``(weight half, α half)``, disjoint subsets of the training set.

    The training set (first a random subset of ``subset`` images drawn with ``seed``, when given) is cut in two: the
    first ``floor(train_portion * n)`` images train the weights, the rest update α; without ``subset`` the cut is in
    the dataset's order, as in the DARTS code. ``transform`` defaults to :func:`train_transform` with ``augment``
    (random crop and flip where allowed, as all three reference searches do; no cutout).
    """
    if not 0.0 < train_portion < 1.0:
        raise ValueError(f"train_portion must be in (0, 1), got {train_portion}")
    info = get_info(name)
    base = load_dataset(info, train=True, root=root,
                        transform=transform if transform is not None else train_transform(info, augment=augment))
    indices = _subset_indices(len(base), subset, seed)  # type: ignore[arg-type]
    split = int(np.floor(train_portion * len(indices)))
    return Subset(base, indices[:split]), Subset(base, indices[split:])


def train_set(name: str | DatasetInfo = DEFAULT_DATASET, *, subset: int | None = None, seed: int = 0,
              root: str | os.PathLike[str] | None = None, augment: bool = True, cutout: int = 0) -> Dataset:
    """The training set for retraining with :func:`train_transform` (a seeded random ``subset`` when given)."""
    info = get_info(name)
    base = load_dataset(info, train=True, root=root, transform=train_transform(info, augment, cutout))
    return _subset(base, subset, seed)


def test_set(name: str | DatasetInfo = DEFAULT_DATASET, subset: int | None = None, seed: int = 0,
             root: str | os.PathLike[str] | None = None) -> Dataset:
    """The test set with :func:`test_transform` (a seeded random ``subset`` when given)."""
    base = load_dataset(name, train=False, root=root)
    return _subset(base, subset, seed)

