"""The hardware side of a run: Lightning's accelerator / devices / precision, opt-in ``torch.compile``, CUDA defaults.

``search`` and ``train`` pass ``--accelerator``, ``--devices`` and ``--precision`` (Lightning's names, e.g. ``gpu``,
``1``, ``bf16-mixed``) unchanged into the ``Trainer`` through :func:`trainer_kwargs`. On a GPU it also turns on
``cudnn.benchmark`` (Trainer ``benchmark=True``: the supernet's shapes never change) and the loaders pin memory
(:func:`pin_memory`); Lightning already copies batches with ``non_blocking=True`` to CUDA devices. None of this is
done on a CPU. ``--compile`` compiles the supernet with ``torch.compile`` (:class:`CompileSupernet`); it is opt-in:
compiling the full DARTS supernet did not finish within 20 minutes on a 2-core CPU, and it only pays where the
kernel-launch overhead of the many small ops dominates (a GPU).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Union

import pytorch_lightning as pl

__all__ = ['PRECISIONS', 'uses_gpu', 'parse_devices', 'trainer_kwargs', 'pin_memory', 'CompileSupernet']

_logger = logging.getLogger(__name__)

# Lightning 2.x precision names (pytorch_lightning.trainer.connectors.accelerator_connector).
PRECISIONS = ('32-true', '32', '16-mixed', '16', 'bf16-mixed', 'bf16', '16-true', 'bf16-true', '64-true', '64')


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` runs on a CUDA device here (``auto`` does when one is present)."""
    import torch
    return accelerator in ('gpu', 'cuda') or (accelerator == 'auto' and torch.cuda.is_available())


def parse_devices(devices: Union[int, str]) -> Union[int, str]:
    """``'2'`` -> 2; ``'auto'``, ``'0,1'`` and ints unchanged (Lightning's forms)."""
    if isinstance(devices, str) and devices.strip().lstrip('-').isdigit():
        return int(devices)
    return devices


def trainer_kwargs(accelerator: str = 'auto', devices: Union[int, str] = 'auto',
                   precision: Optional[str] = None) -> Dict[str, Any]:
    """``Trainer`` keyword arguments for a device choice (``precision=None``: Lightning's default)."""
    if precision is not None and str(precision) not in PRECISIONS:
        raise ValueError(f'precision={precision!r} is invalid; allowed: {list(PRECISIONS)} (Lightning\'s names).')
    kwargs: Dict[str, Any] = dict(accelerator=accelerator, devices=parse_devices(devices))
    if precision is not None:
        kwargs['precision'] = str(precision)
    if uses_gpu(accelerator):
        kwargs['benchmark'] = True  # cudnn.benchmark: fixed shapes, pick the fastest convolution algorithms
    return kwargs


def pin_memory(accelerator: str) -> bool:
    """Pinned host memory for the loaders on a GPU (asynchronous copies), not on a CPU."""
    return uses_gpu(accelerator)


class CompileSupernet(pl.Callback):
    """``torch.compile`` the network of the Lightning module in place at the start of each fit (opt-in).

    The network is the search module's ``training_module.model`` (the supernet) or a plain module's ``model``
    (retraining). ``nn.Module.compile`` keeps the parameter names, so checkpoints, α discovery and exports are
    unchanged. P-DARTS builds a new supernet per stage; each is compiled when its fit starts.
    """

    def __init__(self, **compile_kwargs: Any):
        self.compile_kwargs = compile_kwargs

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        owner = getattr(pl_module, 'training_module', pl_module)
        model = getattr(owner, 'model', None)
        if model is None:
            raise ValueError(f'CompileSupernet: {type(pl_module).__name__} has no model to compile (expected '
                             '`training_module.model` or `model`); drop --compile.')
        if not getattr(model, '_nni_darts_compiled', False):
            model.compile(**self.compile_kwargs)
            model._nni_darts_compiled = True
            _logger.info('torch.compile: %s (%s)', type(model).__name__, self.compile_kwargs or 'defaults')

