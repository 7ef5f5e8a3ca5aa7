"""The datasets known by name: their static facts (:class:`DatasetInfo`, :data:`DATASETS`), the data root and
the error of a dataset that is not installed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["DATASETS", "DEFAULT_DATASET", "DATA_ROOT_ENV", "DatasetInfo", "DatasetNotFoundError", "default_root",
           "get_info"]

DATA_ROOT_ENV = "NNI_DARTS_EXT_DATA"
DEFAULT_DATASET = "fashion-mnist"
_DIGITS_NUM_TEST = 360


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts of a dataset: classes, channels, image side, per-channel mean/std in [0, 1] (``Normalize``),
    image counts, and the training augmentation: random-crop padding and whether a horizontal flip preserves labels."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_test: int
    crop_padding: int = 0
    hflip: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one transformed image."""
        return (self.in_channels, self.image_size, self.image_size)


# name, classes, channels, side, mean, std, train images, test images, crop padding, flip
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({
    # clothes are left-right symmetric: flips preserve labels (digits' do not)
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), 60000, 10000, 2, True),
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), 60000, 10000, 2, False),
    # the DARTS code's CIFAR_MEAN / CIFAR_STD
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.49139968, 0.48215827, 0.44653124),
                           (0.24703233, 0.24348505, 0.26158768), 50000, 10000, 4, True),
    "digits": DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3760,), 1797 - _DIGITS_NUM_TEST, _DIGITS_NUM_TEST, 1,
                          False),
})
"""Known datasets by name."""


class DatasetNotFoundError(FileNotFoundError):
    """A known dataset is not installed under the data root; the message says how to install it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (type(self), (self.name, str(self.args[0])))


def get_info(name: str | DatasetInfo = DEFAULT_DATASET) -> DatasetInfo:
    """The facts of a dataset; case and ``_``/``-`` are ignored. An unknown name raises ``ValueError`` listing the
    known ones."""
    if isinstance(name, DatasetInfo):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def default_root() -> Path:
    """``$NNI_DARTS_EXT_DATA`` when set and not empty, else ``~/.cache/nni_darts_ext/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nni_darts_ext" / "data"


def _root(root: str | os.PathLike[str] | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()

