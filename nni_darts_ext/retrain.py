"""Train a found architecture from scratch (DARTS section 3.3, architecture evaluation) and report accuracy,
parameters and mult-adds.

The fixed network is :class:`~nni_darts_ext.DartsCellSpace` rebuilt under ``nni.nas.space.model_context(arch)``
(only the chosen ops, affine BN, optional auxiliary head), trained by :class:`RetrainModule` with a plain Lightning
``Trainer``. The defaults are the DARTS evaluation recipe (quark0/darts ``cnn/train.py`` and the README command
``python train.py --auxiliary --cutout``; paper appendix A.2.1): 20 cells, C=36, 600 epochs, batch 96, SGD lr 0.025
cosine-annealed to 0, momentum 0.9, weight decay 3e-4, gradient-norm clip 5, auxiliary head weight 0.4, drop-path
0.2 ramped linearly (``drop_path_prob * epoch / epochs``), cutout 16, evaluation on the test set every epoch.

Outputs in ``out``: ``summary.json`` and ``summary.txt`` (one line), the cell pictures (``cell_{normal,reduce}.
{png,svg}``), ``arch.json``, TensorBoard logs under ``logs/`` and Lightning checkpoints under ``checkpoints/``
(one per epoch plus ``last.ckpt``; a new call with the same ``out`` resumes from ``last.ckpt``).

CLI: ``python -m nni_darts_ext train --arch ARCH.json | --genotype DARTS_V2 --dataset fashion-mnist --out DIR
[--preset cpu]``. The presets have the names of ``search``'s (``small`` is an alias of ``cpu``), and the dataset is,
in order: the one given, the search's (an arch from a search folder: ``summary.json`` beside it), the preset's.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.callbacks import Timer

from . import accel
from ._compat import moved_names
from .data import DartsDataModule, DatasetInfo, get_info
from .settings import PRESETS as SEARCH_PRESETS
from .settings import RETRAIN_PRESETS as PRESETS  # the recipe presets (train --preset); importable here as before
from .settings import RETRAIN_RESUME_FREE_SETTINGS, RetrainConfig, RetrainSettings, preset_cost_line, preset_name
from .space.genotype import (OUR_FORMAT, Genotype, arch_to_genotype, genotype_from_name, genotype_to_arch, load_arch,
                             save_arch, to_arch_format, validate_arch)
from .space.flops import count_flops  # its home since the FLOP counting left this module; importable here as before
from .space.network import DartsCellSpace
from .space.ops import OPS

__all__ = ['RetrainSettings', 'RetrainConfig', 'RetrainModule', 'RetrainResult', 'PRESETS', 'resolve_arch',
           'search_dataset', 'resolve_dataset', 'build_model', 'count_parameters', 'count_flops', 'retrain']

# The ``train`` command's argument tail moved to the application package; importable here as before (deprecated).
__getattr__ = moved_names(__name__, 'nni_darts_ext.app.train_command',
                          ('add_arguments', 'run', 'TrainCommand', 'train_settings'))

_logger = logging.getLogger(__name__)

ArchSource = Union[str, os.PathLike, Mapping[str, Any], Genotype]


def search_dataset(source: Any) -> Optional[Tuple[str, Path]]:
    """``(dataset, summary.json)`` of the run an arch comes from: ``source`` a run folder, its ``summary.json``, or
    an arch file with a ``summary.json`` beside it (a search's or a retraining's); ``None`` for anything else."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    summary = (path / 'summary.json' if path.is_dir() else
               path if path.name == 'summary.json' else path.with_name('summary.json'))
    if not summary.is_file():
        return None
    try:
        dataset = json.loads(summary.read_text()).get('dataset')
    except (OSError, ValueError, AttributeError):
        return None
    return (dataset, summary) if isinstance(dataset, str) else None


def resolve_dataset(source: Any, dataset: Optional[str], preset: Optional[str]) -> Tuple[str, str]:
    """``(dataset, where it comes from)``: the one given, else the search's of ``source``
    (:func:`search_dataset`), else the preset's (``search.PRESETS``)."""
    if dataset is not None:
        return dataset, 'given'
    found = search_dataset(source)
    if found is not None:
        return found[0], f'the dataset of the run in {found[1].parent} ({found[1].name}); --dataset overrides it'
    name = preset_name(preset)
    return SEARCH_PRESETS[name]['dataset'], f'the {name} preset\'s dataset; --dataset overrides it'


# --- the model -----------------------------------------------------------------------------------------------------
def resolve_arch(source: ArchSource) -> Tuple[Dict[str, Any], Genotype, str]:
    """``(arch dict, genotype, description)`` from an arch dict, a ``Genotype``, a published genotype name or an arch
    / search summary JSON file; arch dicts and files may also be in the format of NNI's hub DARTS space (converted)."""
    if isinstance(source, Genotype):
        return genotype_to_arch(source), source, 'genotype'
    if isinstance(source, Mapping):
        return to_arch_format(dict(source), OUR_FORMAT), arch_to_genotype(dict(source)), 'arch dict'
    path = Path(source)
    if path.is_dir():  # a search (or retraining) folder: its arch.json
        if not (path / 'arch.json').is_file():
            raise FileNotFoundError(f'{str(source)!r} is a folder without arch.json; pass the arch file, or the '
                                    'folder of a finished search.')
        path = path / 'arch.json'
    if path.is_file():
        arch = load_arch(path)  # the genotype keeps a hub arch's slot order; the arch dict is converted to ours
        return to_arch_format(arch, OUR_FORMAT), arch_to_genotype(arch), str(path)
    try:
        genotype = genotype_from_name(str(source))
    except ValueError:
        raise FileNotFoundError(f'{str(source)!r} is neither an arch file nor a published genotype name.') from None
    return genotype_to_arch(genotype), genotype, str(source).upper()


def build_model(arch: Mapping[str, Any], info: DatasetInfo,
                config: RetrainSettings = RetrainSettings()) -> DartsCellSpace:
    """The fixed evaluation network of ``arch`` for a dataset, built by NNI under ``model_context(arch)``.

    The arch is first checked against the labels of a small search space over every registry op (same as
    ``DartsCellSpace.freeze``; a missing label or unknown op raises ``ArchFileError`` naming it).
    """
    from nni.nas.space import model_context

    genotype = arch_to_genotype(dict(arch))
    num_nodes = max(len(genotype.normal), len(genotype.reduce)) // 2
    template = DartsCellSpace(width=4, num_cells=3, num_nodes=num_nodes, op_candidates=list(OPS),
                              in_channels=info.in_channels, image_size=8, num_classes=info.num_classes)
    validate_arch(dict(arch), template.simplify(), source='The arch')
    with model_context(dict(arch)):
        return DartsCellSpace(width=config.width, num_cells=config.cells, num_nodes=num_nodes,
                              in_channels=info.in_channels, image_size=info.image_size,
                              num_classes=info.num_classes, auxiliary=config.auxiliary_weight > 0,
                              drop_path_prob=0.0)


def count_parameters(model: nn.Module, auxiliary: bool = False) -> int:
    """Parameters, without the auxiliary head unless asked (DARTS ``utils.count_parameters_in_MB`` skips
    names containing "auxiliary")."""
    return sum(p.numel() for name, p in model.named_parameters() if auxiliary or 'auxiliary' not in name)


# --- Lightning --------------------------------------------------------------------------------------------------------
class RetrainModule(pl.LightningModule):
    """Cross-entropy + ``auxiliary_weight`` x auxiliary cross-entropy (training only), SGD with cosine annealing, the
    drop-path ramp ``drop_path_prob * epoch / epochs`` at each training epoch start (DARTS ``train.py``); accuracy
    by torchmetrics (``{train,val,test}_acc``)."""

    def __init__(self, model: DartsCellSpace, config: RetrainSettings = RetrainSettings(),
                 arch: Optional[Mapping[str, Any]] = None, dataset: Optional[str] = None):
        super().__init__()
        self.model = model
        self.config = config
        self.save_hyperparameters({'config': dataclasses.asdict(config), 'arch': dict(arch) if arch else None,
                                   'dataset': dataset})
        from torchmetrics.classification import MulticlassAccuracy
        # micro average: correct / images, over the epoch (and the ranks under DDP)
        self.accuracy = nn.ModuleDict({f'{stage}_acc': MulticlassAccuracy(model.classifier.out_features,
                                                                          average='micro')
                                       for stage in ('train', 'val', 'test')})
        self._channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def objective(self, batch: Any) -> Dict[str, torch.Tensor]:
        """The loss terms of a batch; the auxiliary term only exists while the model is in training mode."""
        x, y = batch
        if self._channels_last and x.dim() == 4:  # here, not in on_after_batch_transfer: the data module's hook
            x = x.contiguous(memory_format=torch.channels_last)  # would make Lightning warn on every run
        logits = self.model(x)
        ce = F.cross_entropy(logits, y)
        out = {'logits': logits, 'ce': ce, 'loss': ce}
        aux = self.model.aux_logits if self.model.training else None
        if aux is not None and self.config.auxiliary_weight > 0:
            out['aux'] = F.cross_entropy(aux, y)
            out['loss'] = ce + self.config.auxiliary_weight * out['aux']
        return out

    def _log_terms(self, stage: str, terms: Dict[str, torch.Tensor], y: torch.Tensor, **kw: Any) -> None:
        n = y.size(0)
        acc = self.accuracy[f'{stage}_acc']
        acc(terms['logits'].detach(), y)
        self.log(f'{stage}_loss', terms['loss'], batch_size=n, prog_bar=stage == 'train', **kw)
        self.log(f'{stage}_acc', acc, batch_size=n, prog_bar=True,
                 **{k: v for k, v in kw.items() if k != 'sync_dist'})
        if 'aux' in terms:
            self.log(f'{stage}_aux_loss', terms['aux'], batch_size=n, **kw)

    def training_step(self, batch, batch_idx):
        terms = self.objective(batch)
        if not torch.isfinite(terms['loss']):
            raise FloatingPointError(f'The training loss is {terms["loss"].item()} at epoch {self.current_epoch}: '
                                     'lower the learning rate or check the data.')
        self._log_terms('train', terms, batch[1], on_step=True, on_epoch=True)
        return terms['loss']

    def validation_step(self, batch, batch_idx):  # sync_dist: under DDP the mean over the ranks' shards
        self._log_terms('val', self.objective(batch), batch[1], on_epoch=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        self._log_terms('test', self.objective(batch), batch[1], on_epoch=True, sync_dist=True)

    def on_fit_start(self):
        auto = self.device.type == 'cpu'
        self._channels_last = auto if self.config.channels_last is None else self.config.channels_last
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self):
        # DARTS train.py: model.drop_path_prob = args.drop_path_prob * epoch / args.epochs (0 in the first epoch)
        prob = self.config.drop_path_prob * self.current_epoch / self.config.epochs
        self.model.set_drop_path_prob(prob)
        self.log('drop_path_prob', prob, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        c = self.config
        optimizer = torch.optim.SGD(self.model.parameters(), lr=c.learning_rate, momentum=c.momentum,
                                    weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.epochs, eta_min=c.learning_rate_min)
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': 'epoch'}}


# --- one call ---------------------------------------------------------------------------------------------------------
@dataclass
class RetrainResult:
    arch: Dict[str, Any]
    genotype: Genotype
    source: str
    dataset: str
    config: RetrainSettings
    epochs_done: int
    global_step: int
    seconds: float
    train_seconds_total: float
    test_acc: Optional[float]
    test_loss: Optional[float]
    params: int
    params_with_auxiliary: int
    flops: int
    out: Path
    resumed_from_epoch: Optional[int] = None
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def mult_adds(self) -> int:
        return self.flops // 2

    def summary(self) -> Dict[str, Any]:
        return {
            'dataset': self.dataset, 'arch_source': self.source, 'epochs': self.config.epochs,
            'epochs_done': self.epochs_done, 'global_step': self.global_step, 'completed':
            self.epochs_done >= self.config.epochs, 'resumed_from_epoch': self.resumed_from_epoch,
            'seconds': round(self.seconds, 1), 'train_seconds_total': round(self.train_seconds_total, 1),
            'test_acc': self.test_acc, 'test_loss': self.test_loss, 'params': self.params,
            'params_with_auxiliary': self.params_with_auxiliary, 'mult_adds': self.mult_adds, 'flops': self.flops,
            'genotype': str(self.genotype), 'arch': self.arch, 'config': dataclasses.asdict(self.config),
            'files': self.files,
        }

    def headline(self) -> str:
        acc = 'n/a' if self.test_acc is None else f'{self.test_acc:.4f}'
        pictures = ', '.join(v for k, v in self.files.items() if k.startswith('cell_') and v.endswith('.png'))
        return (f'retrain {self.source} on {self.dataset}: {self.epochs_done}/{self.config.epochs} epochs in '
                f'{self.train_seconds_total:.0f} s, test acc {acc}, {self.params / 1e6:.3f} M params, '
                f'{self.mult_adds / 1e6:.1f} M mult-adds; genotype {self.genotype}'
                + (f'; pictures {pictures}' if pictures else ''))


def _resume_point(out: Path, arch: Dict[str, Any], dataset: str, config: RetrainSettings
                  ) -> Tuple[Optional[Path], Optional[int]]:
    """``(the newest checkpoint of out/checkpoints, the epoch it resumes at)``, or ``(None, None)`` when there is none.

    Refuses a checkpoint of another arch, dataset or recipe: the schedule (cosine T_max, drop-path ramp) and the
    weights' shapes come from them.
    """
    from .rundir import load_checkpoint, newest_checkpoint
    from .runner import refuse_changed_settings
    last = newest_checkpoint(out / 'checkpoints')  # an epoch file when killed before last.ckpt was written
    if last is None:
        return None, None
    saved = load_checkpoint(last)  # a truncated file: an error naming it and --overwrite
    hparams = saved.get('hyper_parameters', {})
    remedy = 'pass another --out, or --overwrite (overwrite=True) to delete that run and start over in this one.'
    if hparams.get('arch') is not None and hparams['arch'] != arch:
        raise ValueError(f'{last} was trained for a different architecture; {remedy}')
    if hparams.get('dataset') not in (None, dataset):
        raise ValueError(f'{last} was trained on {hparams["dataset"]!r}, not {dataset!r}; {remedy}')
    refuse_changed_settings(hparams.get('config', {}), dataclasses.asdict(config), RETRAIN_RESUME_FREE_SETTINGS,
                            out, 'retraining')
    return last, int(saved.get('epoch', -1)) + 1


def retrain(arch: ArchSource, dataset: Union[str, DatasetInfo, None] = None,
            out: Union[str, Path] = 'runs/retrain', *, preset: Optional[str] = None,
            config: Optional[RetrainSettings] = None, resume: bool = True, overwrite: bool = False,
            train_loader: Any = None, test_loader: Any = None, callbacks: Sequence[pl.Callback] = (),
            data_dir: Optional[str] = None, progress_bar: Optional[bool] = None, plots: bool = True,
            download: bool = False, **overrides: Any) -> RetrainResult:
    """Train ``arch`` from scratch on ``dataset`` and write the outputs of the module docstring into ``out``.

    Parameters
    ----------
    arch
        Arch dict, ``Genotype``, published genotype name (``'DARTS_V2'``) or arch / search-summary JSON file.
    dataset
        Dataset name (:func:`nni_darts_ext.data.get_info`) or ``DatasetInfo``; sets the network's input/output.
        ``None``: the dataset of the search ``arch`` comes from (a run folder, or an arch file beside its
        ``summary.json``), else the preset's (:func:`resolve_dataset`; logged).
    preset, config, overrides
        The recipe: ``config`` (default :class:`RetrainSettings`, the DARTS recipe), then ``PRESETS[preset]``, then
        keyword overrides (``epochs=3`` ...); unknown keys raise ``ValueError``.
    resume
        Continue from ``out/checkpoints/last.ckpt`` when it exists (it must be of the same arch, dataset and
        recipe). ``False``: ``out`` must hold no run (one run per folder: docs/reliability.md).
    overwrite
        Delete the run in ``out`` (results, checkpoints, logs) before starting a new one.
    train_loader, test_loader
        Replace the loaders of the dataset's :class:`~nni_darts_ext.data.DartsDataModule` (e.g. ``FakeData``);
        ``dataset`` still gives shapes and classes.
    callbacks
        Extra Lightning callbacks.
    progress_bar
        The Lightning progress bar; ``None``: only when stderr is a terminal. Without it, one log line per epoch.
    download
        Let torchvision download CIFAR-10 into ``data_dir`` when it is not there (needs internet).

    Returns
    -------
    RetrainResult
    """
    preset = preset_name(preset)
    config = (config or RetrainSettings()).replace(**{**PRESETS[preset], **overrides})
    _logger.info(preset_cost_line('train', preset))
    if not isinstance(dataset, DatasetInfo):
        dataset, origin = resolve_dataset(arch, dataset, preset)
        if origin != 'given':
            _logger.info('dataset %s: %s', dataset, origin)
    arch, genotype, source = resolve_arch(arch)
    info = get_info(dataset)
    if download:  # torchvision's download (CIFAR-10) into the data root, before anything is written
        from .data import prepare_data
        prepare_data(data_dir, (info.name,), download=True)
    out = Path(out)
    from . import rundir
    from .runner import RunStatus
    folder = rundir.check_run_folder(out, resume='auto' if resume else False, overwrite=overwrite, command='train')
    ckpt_path, resumed_from = _resume_point(out, arch, info.name, config) if folder.resume_from else (None, None)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(arch, info, config)
    params, params_aux = count_parameters(model), count_parameters(model, auxiliary=True)
    flops = count_flops(model, info.input_shape)
    data = DartsDataModule(info, mode='retrain', batch_size=config.batch_size, subset=config.subset, seed=config.seed,
                           root=data_dir, num_workers=config.num_workers, augment=config.augment, cutout=config.cutout,
                           test_subset=config.test_subset, pin_memory=accel.pin_memory(config.accelerator))
    if train_loader is None and test_loader is None:
        data.setup()  # a missing dataset fails here, before anything is written
        fit_data, test_data = {'datamodule': data}, {'datamodule': data}
        train_loader = data.train_dataloader()
    else:  # replaced loaders (either may stay the dataset's)
        train_loader = data.train_dataloader() if train_loader is None else train_loader
        test_loader = data.test_dataloader() if test_loader is None else test_loader
        fit_data, test_data = {'train_dataloaders': train_loader, 'val_dataloaders': test_loader}, \
            {'dataloaders': test_loader}
    # every check passed: from here on the run writes into ``out``
    rundir.prepare_run_folder(folder)
    from .oneshot.distributed import is_rank_zero
    writer = is_rank_zero()  # under DDP only rank 0 writes (Lightning sets the rank before the group exists)
    if writer:
        save_arch(arch, out / 'arch.json')
    files = {'arch': str(out / 'arch.json')}
    if plots and writer:
        from .viz import plot_genotype
        try:
            files.update(plot_genotype(genotype, out))
        except Exception as err:  # noqa: BLE001 -- a picture is never worth a lost run
            _logger.warning('No cell pictures: %s', err)
    status = RunStatus(out, seed=config.seed)
    status.running(arch=arch, dataset=info.name, config=dataclasses.asdict(config))
    sampler = getattr(train_loader, 'sampler', None)
    if resumed_from and hasattr(sampler, 'epoch'):
        sampler.epoch = resumed_from  # the shuffling continues where it stopped instead of replaying epoch 0
    module = RetrainModule(model, config, arch, info.name)
    batches = len(train_loader) if hasattr(train_loader, '__len__') else 10
    if progress_bar is None:
        progress_bar = sys.stderr.isatty()
    if not progress_bar:
        from .callbacks import EpochLogger
        callbacks = [*callbacks, EpochLogger()]
    timer = Timer()  # training seconds over every run of the checkpoint lineage (restored with it)
    trainer = _trainer(config, out, [timer, *callbacks], progress_bar,
                       min(batches, config.limit_train_batches or batches))
    start = time.time()
    _logger.info('retrain %s on %s: %s%s', source, info.name, config, f' (resuming {ckpt_path})' if ckpt_path else '')
    with status.failures():
        trainer.fit(module, **fit_data, ckpt_path=str(ckpt_path) if ckpt_path else None)
        epochs_done, global_step = trainer.current_epoch, trainer.global_step
        metrics = trainer.test(module, **test_data, verbose=False)[0]
    result = RetrainResult(
        arch=arch, genotype=genotype, source=source, dataset=info.name, config=config, epochs_done=epochs_done,
        global_step=global_step, seconds=time.time() - start, train_seconds_total=timer.time_elapsed('train'),
        test_acc=_float(metrics.get('test_acc')), test_loss=_float(metrics.get('test_loss')), params=params,
        params_with_auxiliary=params_aux, flops=flops, out=out, resumed_from_epoch=resumed_from,
        files={**files, 'logs': str(out / 'logs'), 'checkpoints': str(out / 'checkpoints'),
               'summary': str(out / 'summary.json')})
    status.finished(result.summary(), result.headline() + '\n', complete=result.epochs_done >= config.epochs)
    return result


def _float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _trainer(config: RetrainSettings, out: Path, callbacks: Sequence[pl.Callback], progress_bar: bool,
             batches_per_epoch: int) -> pl.Trainer:
    from pytorch_lightning.callbacks import LearningRateMonitor

    from . import runner

    # save_top_k=1 without a monitor keeps the newest epoch's file; last.ckpt is what a new call resumes from
    checkpoint = runner.checkpoint_callback(out, filename='epoch{epoch:03d}', auto_insert_metric_name=False,
                                            save_on_train_epoch_end=True)
    extra: Dict[str, Any] = dict(
        max_epochs=config.epochs, gradient_clip_val=config.gradient_clip_val, gradient_clip_algorithm='norm',
        enable_model_summary=False, log_every_n_steps=max(1, min(10, batches_per_epoch)),
        check_val_every_n_epoch=max(1, config.val_every_n_epochs))
    if not config.val_every_n_epochs:
        extra['limit_val_batches'] = 0  # evaluate once, on the test set after training
    return pl.Trainer(**runner.trainer_kwargs(config, out, checkpoint,
                                              [LearningRateMonitor(logging_interval='epoch'), *callbacks],
                                              progress_bar=progress_bar, **extra))
