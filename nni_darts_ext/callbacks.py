"""Lightning callbacks that show a search's architecture weights in TensorBoard (drawing is in :mod:`.viz`).

:class:`ArchitectureLogger`, added to every search by ``search.run_search``, logs at each training epoch end

* ``alpha/{cell}/node{j}/edge{i}/{op}``: softmax(α) of every candidate op of every edge (scalars);
* ``beta/{cell}/node{j}/inputs/{i}``: softmax(β_j)_i of every edge (scalars; PC-DARTS edge normalisation only);
* ``alpha/{cell}``: a heat map image per cell type (rows: edges, columns: ops; boxes: the derived genotype),

and at the end of the fit ``alpha_final/{cell}`` (and, with ``out_dir``, ``alpha_{cell}.png`` files). Scalars are
logged at the global step (aligned with the loss curves), images at the epoch.
The genotype of every epoch is logged as text by ``DartsSearchModule.log_architecture``. These are the only α
scalars: the search module does not log NNI's duplicate ``prob/...`` set.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import pytorch_lightning as pl

from .space.genotype import Genotype, arch_to_genotype
from .viz import figure_rgb, heatmap_figure, prob_matrix

__all__ = ['EpochLogger', 'ArchitectureLogger', 'export_probs', 'prob_scalars']

_logger = logging.getLogger(__name__)

CELLS = ('normal', 'reduce')


def export_probs(pl_module: pl.LightningModule) -> Dict[str, Dict[Any, float]]:
    """``pl_module.export_probs()`` as plain floats, or ``{}`` for a module without architecture weights."""
    export = getattr(pl_module, 'export_probs', None)
    if export is None:
        return {}
    return {label: {choice: float(p) for choice, p in dist.items()} for label, dist in export().items()}


def prob_scalars(probs: Dict[str, Dict[Any, float]]) -> Dict[str, float]:
    """Flatten probs to TensorBoard tags: ``alpha/<edge label>/<op>`` and ``beta/<inputs label>/<edge index>``."""
    return {f'{"beta" if label.endswith("/inputs") else "alpha"}/{label}/{choice}': float(p)
            for label, dist in probs.items() for choice, p in dist.items()}


def _genotype(pl_module: pl.LightningModule) -> Optional[Genotype]:
    try:
        return arch_to_genotype(pl_module.export())
    except (AttributeError, ValueError):
        return None


class ArchitectureLogger(pl.Callback):
    """Log softmax(α) (and β) each epoch as scalars and heat map images; the final heat maps at the end of the fit.

    Parameters
    ----------
    image_every_n_epochs
        Heat map images every this many epochs (0: only the final ones).
    out_dir
        Also write the final heat maps as ``alpha_{cell}.png`` here.
    """

    def __init__(self, image_every_n_epochs: int = 1, out_dir: Optional[str | Path] = None):
        super().__init__()
        self.image_every_n_epochs = image_every_n_epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.files: Dict[str, str] = {}
        self._images_of: Optional[Dict[str, Dict[Any, float]]] = None
        self._images: Dict[str, Any] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        probs = export_probs(pl_module)
        if not probs:
            return
        if trainer.is_global_zero:  # one call per logger (hundreds of self.log calls cost seconds per epoch)
            scalars = prob_scalars(probs)
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
        every = self.image_every_n_epochs
        if every and (trainer.current_epoch + 1) % every == 0:
            self._log_images(trainer, self._render(pl_module, probs, f'epoch {trainer.current_epoch}'), 'alpha')

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        probs = export_probs(pl_module)
        if not probs:
            return
        # α does not change after the last epoch's end: reuse that rendering when it is the same
        images = self._images if self._images_of == probs else self._render(pl_module, probs, 'final')
        self._log_images(trainer, images, 'alpha_final')
        if self.out_dir is not None and trainer.is_global_zero:
            from matplotlib.image import imsave
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for cell, rgb in images.items():
                imsave(self.out_dir / f'alpha_{cell}.png', rgb)
                self.files[f'alpha_{cell}'] = str(self.out_dir / f'alpha_{cell}.png')

    def _render(self, pl_module: pl.LightningModule, probs: Dict[str, Dict[Any, float]], when: str) -> Dict[str, Any]:
        genotype = _genotype(pl_module)
        self._images_of = probs
        self._images = {cell: figure_rgb(heatmap_figure(probs, cell, genotype, title=f'{cell} cell, {when}: '
                                                        'softmax(α)'))
                        for cell in CELLS if prob_matrix(probs, cell)[0]}
        return self._images

    @staticmethod
    def _log_images(trainer: pl.Trainer, images: Dict[str, Any], prefix: str) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if hasattr(logger.experiment, 'add_image'):
                for cell, rgb in images.items():
                    logger.experiment.add_image(f'{prefix}/{cell}', rgb, global_step=trainer.current_epoch,
                                                dataformats='HWC')


class EpochLogger(pl.Callback):
    """One plain log line per epoch with the epoch's logged metrics: what a log file gets instead of a progress
    bar (whose carriage returns and cursor codes garble redirected output)."""

    def __init__(self, logger: Optional[logging.Logger] = None):
        super().__init__()
        self.logger = logger or logging.getLogger('nni_darts_ext.progress')
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import time
        self._start = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import time
        logged = trainer.callback_metrics  # 'x' and 'x_epoch' both exist for metrics logged on step and epoch
        metrics = {k: float(v) for k, v in sorted(logged.items())
                   if not k.endswith('_step') and f'{k}_epoch' not in logged and getattr(v, 'numel', lambda: 1)() == 1}
        shown = ', '.join(f'{k.removesuffix("_epoch")} {v:.4g}' for k, v in metrics.items())
        self.logger.info('epoch %d/%d (%.1f s): %s', trainer.current_epoch + 1, trainer.max_epochs,
                         time.time() - self._start, shown or 'no metrics')


class DataParallelSyncCheck(pl.Callback):
    """Under DDP: after every training step, all-gather α/β and the weights and raise if any rank differs (NNI
    microsoft/nni#5013 is α drifting apart per rank). One process: records only.

    ``history`` (every rank) holds per step ``{'step', 'alphas'}`` (α/β flattened in ``arch_parameters`` order, as
    floats), for comparisons with other runs; ``max_weight_diff`` the largest weight difference seen between ranks.
    """

    def __init__(self, check_weights: bool = True, record: bool = True):
        super().__init__()
        self.check_weights = check_weights
        self.record = record
        self.history: list = []
        self.max_weight_diff = 0.0
        self.checked_steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        import torch
        arch = list(pl_module.arch_parameters())
        alphas = torch.cat([p.detach().reshape(-1) for p in arch]) if arch else torch.zeros(0)
        if self.record:
            self.history.append({'stage': getattr(getattr(pl_module, 'stage', None), 'index', 0),
                                 'epoch': trainer.current_epoch, 'batch': batch_idx,
                                 'alphas': alphas.double().tolist()})
        if trainer.world_size <= 1:
            return
        gathered = trainer.strategy.all_gather(alphas)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            diff = max(float((g - gathered[0]).abs().max()) for g in gathered[1:])
            raise RuntimeError(f'α/β differ between ranks after step {batch_idx} of epoch {trainer.current_epoch} '
                               f'(max |Δ| {diff:.3g}): their gradients are not all-reduced')
        if self.check_weights:
            ids = {id(p) for p in arch}
            weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters() if id(p) not in ids])
            gathered = trainer.strategy.all_gather(weights)
            diff = max(float((g - gathered[0]).abs().max()) for g in gathered[1:])
            self.max_weight_diff = max(self.max_weight_diff, diff)
            if diff != 0.0:
                raise RuntimeError(f'weights differ between ranks after step {batch_idx} (max |Δ| {diff:.3g}): '
                                   'their gradients are not all-reduced')
        self.checked_steps += 1
