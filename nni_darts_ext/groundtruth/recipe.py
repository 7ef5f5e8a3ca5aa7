"""The ground-truth table's training recipe: data, one training run of a cell, its record.

One fixed recipe trains every cell (NAS-Bench-201's idea, Dong & Yang 2020, Sec. 2.3, at a 2-core size): SGD with
Nesterov momentum 0.9, learning rate 0.1 cosine-annealed to 0 per step, weight decay 5e-4 and batch size as in
NAS-Bench-201 (there: batch 256, 200 epochs, CIFAR-10), here on a fixed subset of Fashion-MNIST at 16x16. The
training loop is a plain PyTorch loop on in-memory tensors: a table is a thousand runs of seconds each, where a
Lightning Trainer's set-up per run would cost more than the run (``docs/groundtruth.md``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from .space import NasBench201Grey, arch_to_string, canonical_key, validate_arch

__all__ = ["GroundTruthData", "GroundTruthRecipe", "build_network", "load_data", "train_cell"]


@dataclass(frozen=True)
class GroundTruthRecipe:
    """Everything that decides a table entry's numbers, written into the table. Changing any field makes another
    table (the build refuses to mix them)."""

    dataset: str = "fashion-mnist"
    image_size: int = 16             # NAS-Bench-201: 32 (CIFAR-10); 16 makes a step 2.6x cheaper here than 28
    train_images: int = 4000         # training subset of Fashion-MNIST's 60,000 (also the searches' data)
    valid_images: int = 2000         # validation subset, disjoint from the training one
    split_seed: int = 0              # the permutation of the 60,000 training images that cuts both subsets
    width: int = 8                   # stem channels C (NAS-Bench-201: 16)
    cells_per_stage: int = 1         # NAS-Bench-201: 5
    epochs: int = 4                  # NAS-Bench-201: 200 (and 12 for its short schedule)
    batch_size: int = 128            # NAS-Bench-201: 256
    lr: float = 0.1                  # NAS-Bench-201: 0.1, cosine to 0, Nesterov
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eval_batch_size: int = 1000
    test_images: Optional[int] = None  # None: all 10,000 test images (the table); a number only for tiny test tables

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class GroundTruthData:
    """The recipe's images as normalised tensors ``(N, 1, S, S)`` and labels; ``test`` is Fashion-MNIST's 10,000
    test images, which no search ever sees."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 10
    meta: Dict[str, Any] = field(default_factory=dict)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images.float().div_(255.0).unsqueeze(1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def load_data(recipe: GroundTruthRecipe = GroundTruthRecipe(), root: str | os.PathLike[str] | None = None
              ) -> GroundTruthData:
    """The training / validation subsets and the test set of ``recipe``, resized and normalised with the training
    subset's mean and std. Raises the data layer's ``DatasetNotFoundError`` when Fashion-MNIST is not installed."""
    from ..data import load_dataset

    if recipe.dataset not in ("fashion-mnist", "mnist"):
        raise ValueError(f"the ground-truth recipe needs a grey 28x28 dataset (fashion-mnist or mnist), "
                         f"got {recipe.dataset!r}")
    train = load_dataset(recipe.dataset, train=True, root=root)
    test = load_dataset(recipe.dataset, train=False, root=root)
    n = len(train.data)
    if recipe.train_images + recipe.valid_images > n:
        raise ValueError(f"train_images + valid_images = {recipe.train_images + recipe.valid_images} exceeds the "
                         f"{n} training images of {recipe.dataset}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.split_seed))
    idx_train = perm[:recipe.train_images]
    idx_valid = perm[recipe.train_images:recipe.train_images + recipe.valid_images]
    train_x = _resize(train.data[idx_train], recipe.image_size)
    mean, std = train_x.mean(), train_x.std()

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).contiguous()

    return GroundTruthData(
        train_x=norm(train_x), train_y=train.targets[idx_train].clone(),
        valid_x=norm(_resize(train.data[idx_valid], recipe.image_size)), valid_y=train.targets[idx_valid].clone(),
        test_x=norm(_resize(test.data[:recipe.test_images], recipe.image_size)),
        test_y=test.targets[:recipe.test_images].clone(),
        meta={"dataset": recipe.dataset, "train_indices_head": idx_train[:5].tolist(), "mean": float(mean),
              "std": float(std), "test_images": len(test.data[:recipe.test_images])})


def build_network(arch: Mapping[str, str], recipe: GroundTruthRecipe = GroundTruthRecipe()) -> torch.nn.Module:
    """The fixed network of ``arch`` (NNI's ``space.freeze``) at the recipe's size."""
    space = NasBench201Grey(stem_out_channels=recipe.width, num_modules_per_stack=recipe.cells_per_stage,
                            num_labels=10, in_channels=1)
    return space.freeze(validate_arch(arch))


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def count_mult_adds(model: torch.nn.Module, image_size: int) -> int:
    """Multiply-adds of one 1x``image_size``² image (``FlopCounterMode``'s FLOPs / 2: convolutions and the
    classifier)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, image_size, image_size))
    return int(counter.get_total_flops()) // 2


def train_cell(arch: Mapping[str, str], seed: int, data: GroundTruthData,
               recipe: GroundTruthRecipe = GroundTruthRecipe()) -> Dict[str, Any]:
    """One run on one torch thread (as every table entry), the caller's thread count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_cell(arch, seed, data, recipe)
    finally:
        torch.set_num_threads(threads)


def _train_cell(arch: Mapping[str, str], seed: int, data: GroundTruthData,
                recipe: GroundTruthRecipe) -> Dict[str, Any]:
    """Train ``arch`` from scratch with ``recipe`` and seed ``seed`` (initialisation and batch order); returns one
    seed's result ``{seed, train_acc, valid_acc, test_acc, seconds}`` plus the cell's ``params`` and ``mult_adds``.
    ``seconds`` is the training's CPU time (``time.process_time``; one torch thread per run, so it does not depend on
    how loaded the machine is): what a search pays to learn this cell's accuracy; ``wall_seconds`` is its wall time."""
    torch.manual_seed(seed)
    model = build_network(arch, recipe)
    params = sum(p.numel() for p in model.parameters())
    mult_adds = count_mult_adds(model, recipe.image_size)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    order_gen = torch.Generator().manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(n, generator=order_gen)
        for i in range(0, n, recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ground-truth training of {arch_to_string(arch)} (seed {seed}) diverged: "
                                         f"loss {float(loss)}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds, wall = time.process_time() - cpu_start, time.perf_counter() - start
    b = recipe.eval_batch_size
    return {"seed": seed, "train_acc": _accuracy(model, data.train_x, data.train_y, b),
            "valid_acc": _accuracy(model, data.valid_x, data.valid_y, b),
            "test_acc": _accuracy(model, data.test_x, data.test_y, b), "seconds": round(seconds, 3),
            "wall_seconds": round(wall, 3),
            "params": params, "mult_adds": mult_adds, "key": canonical_key(arch)}
