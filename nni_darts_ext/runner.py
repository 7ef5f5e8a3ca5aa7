"""The run skeleton that ``search`` and ``train`` share: the Lightning ``Trainer``'s arguments (TensorBoard logger,
checkpoints, accelerator, data parallel), the run folder's ``summary.json`` status, and the check that a resumed run
has the settings it was started with.

A run folder (docs/reliability.md) holds one run: ``summary.json`` says ``running`` while it goes, ``failed`` with
the error when it stops on one, ``finished`` with the results at the end; ``summary.txt`` is its one-line headline.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

from . import accel, rundir

__all__ = ['checkpoint_callback', 'trainer_kwargs', 'distributed_trainer_kwargs', 'RunStatus',
           'refuse_changed_settings']


def distributed_trainer_kwargs(settings: Any) -> Dict[str, Any]:
    """Lightning ``Trainer`` arguments of the data-parallel fields of a ``SearchSettings`` or ``RetrainSettings``
    (only those that are set).

    ``sync_batchnorm`` on CPU uses :class:`~nni_darts_ext.oneshot.distributed.CpuSyncBatchNormPlugin` (PyTorch's
    ``SyncBatchNorm`` refuses CPU tensors); on GPUs Lightning's own ``sync_batchnorm=True``.
    """
    kwargs: Dict[str, Any] = {}  # accelerator / devices / precision: accel.trainer_kwargs
    if settings.num_nodes != 1:
        kwargs['num_nodes'] = settings.num_nodes
    if settings.strategy_backend is not None:
        kwargs['strategy'] = settings.strategy_backend
    if settings.sync_batchnorm:
        import torch
        on_cpu = settings.accelerator == 'cpu' or (settings.accelerator in (None, 'auto')
                                                   and not torch.cuda.is_available())
        if on_cpu:
            from .oneshot.distributed import CpuSyncBatchNormPlugin
            kwargs['plugins'] = [CpuSyncBatchNormPlugin()]
        else:
            kwargs['sync_batchnorm'] = True
    return kwargs


def checkpoint_callback(out: Path, **kwargs: Any) -> Any:
    """Lightning's ``ModelCheckpoint`` into ``out/checkpoints``: one file per epoch and ``last.ckpt``."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    return ModelCheckpoint(dirpath=Path(out) / 'checkpoints', save_last=True, every_n_epochs=1, **kwargs)


def trainer_kwargs(settings: Any, out: Path, checkpoint: Any, callbacks: Sequence[Any], *,
                   progress_bar: bool, **extra: Any) -> Dict[str, Any]:
    """The ``Trainer`` arguments of a run in ``out``: TensorBoard logs in ``out/logs``, the ``checkpoint`` callback
    (then ``callbacks``), atomic checkpoint files, the accelerator / devices / precision and data-parallel fields of
    ``settings`` (:mod:`nni_darts_ext.accel`), ``torch.compile`` when ``settings.compile``, at most
    ``settings.limit_train_batches`` batches per epoch; ``extra`` is added last (the command's own)."""
    from pytorch_lightning.loggers import TensorBoardLogger
    kwargs: Dict[str, Any] = dict(
        logger=TensorBoardLogger(save_dir=str(out), name='logs', version=''), default_root_dir=str(out),
        callbacks=[checkpoint, *callbacks], enable_progress_bar=progress_bar, num_sanity_val_steps=0,
        plugins=[rundir.AtomicCheckpointIO()],
        **accel.trainer_kwargs(settings.accelerator, settings.devices, settings.precision))
    if settings.compile:
        kwargs['callbacks'].append(accel.CompileSupernet())
    if settings.limit_train_batches:
        kwargs['limit_train_batches'] = settings.limit_train_batches
    distributed = distributed_trainer_kwargs(settings)
    kwargs['plugins'] = [*kwargs['plugins'], *distributed.pop('plugins', [])]
    kwargs.update(distributed)
    kwargs.update(extra)
    return kwargs


class RunStatus:
    """``summary.json`` / ``summary.txt`` of the run in ``out`` (rank 0 writes; each write is atomic).

    ``fields`` (the seed, the settings, ...) go into every write, with the package versions.
    """

    def __init__(self, out: Path, **fields: Any):
        self.out = Path(out)
        self.fields: Dict[str, Any] = {'finished': False, **fields, 'versions': rundir.versions()}

    def _write(self, summary: Mapping[str, Any], text: Optional[str] = None) -> None:
        from .ranks import is_rank_zero
        if not is_rank_zero():
            return
        rundir.atomic_write_json(self.out / 'summary.json', summary)
        if text is not None:
            rundir.atomic_write_text(self.out / 'summary.txt', text)

    def running(self, **values: Any) -> None:
        self._write({**self.fields, 'status': 'running', **values})

    def failed(self, message: str) -> None:
        self._write({**self.fields, 'status': 'failed', 'error': message}, f'FAILED: {message}\n')

    def finished(self, summary: Mapping[str, Any], text: str, complete: bool = True, **values: Any) -> None:
        """The results: ``summary`` (the result's own), this run's fields, ``values``; ``text`` into summary.txt."""
        self._write({**summary, **self.fields, 'finished': complete, 'status': 'finished', **values}, text)

    @contextlib.contextmanager
    def failures(self, explain: Callable[[BaseException], BaseException] = lambda err: err,
                 describe: Callable[[BaseException], str] = lambda err: f'{type(err).__name__}: {err}'
                 ) -> Iterator[None]:
        """Record any error (``interrupted`` for Ctrl-C) as ``failed`` and raise it again; ``explain`` may replace
        it by a clearer one (:meth:`nni_darts_ext.guards.DivergenceGuard.explain`), raised from the original."""
        try:
            yield
        except BaseException as err:
            reported = explain(err)
            self.failed('interrupted' if isinstance(err, KeyboardInterrupt) else describe(reported))
            if reported is not err:
                raise reported from err
            raise


def refuse_changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], free: Sequence[str], run: Path,
                            what: str) -> None:
    """A :class:`~nni_darts_ext.rundir.RunFolderError` listing each setting of ``current`` that differs from the
    ``saved`` one of the run in ``run`` (the names in ``free`` may change between a run and its resumption)."""
    changed = rundir.compare_settings(dict(saved), dict(current), free=tuple(free))
    if changed:
        raise rundir.RunFolderError(f'Cannot resume {run} with other settings: {"; ".join(changed)}. Resume with '
                                    f'the settings of the run, or pass --overwrite to start a new {what} there.')
