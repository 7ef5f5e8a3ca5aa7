"""The Lightning data module of the search and of retraining (:class:`DartsDataModule`), its reproducible
sampler, and loader shortcuts for NNI evaluators."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .datasets import search_split, test_set, train_set
from .registry import DEFAULT_DATASET, DatasetInfo, get_info

__all__ = ["DartsDataModule", "SeededRandomSampler", "search_dataloaders", "test_dataloader", "train_dataloader"]


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
        from ..oneshot.distributed import rank, world_size
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


