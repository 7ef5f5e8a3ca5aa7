"""Run a whole search from plain settings: data, space, evaluator, strategy, outputs (used by the CLI and trials).

Outputs in ``out``: ``arch.json`` (the NNI arch dict), ``genotype.txt``, ``summary.json``, TensorBoard logs under
``logs/`` and Lightning checkpoints under ``checkpoints/``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


from .evaluator import WEIGHT_RECIPES
from .space.genotype import arch_to_genotype, count_skips, save_arch
from .space.network import DartsCellSpace

__all__ = ['SearchSettings', 'SearchResult', 'PRESETS', 'STRATEGIES', 'build_strategy', 'build_space', 'run_search']

_logger = logging.getLogger(__name__)

STRATEGIES = ('darts', 'pdarts', 'pcdarts')

# Per-strategy weight recipe of the reference code (batch, lr, lr_min): see evaluator.WEIGHT_RECIPES.
REFERENCE_WEIGHT_RECIPE = WEIGHT_RECIPES
# Weight-only warm-up as a fraction of the epochs: PC-DARTS 15 of 50, P-DARTS 10 of 25 per stage; DARTS none.
WARMUP_FRACTION = {'darts': 0.0, 'pdarts': 10 / 25, 'pcdarts': 15 / 50}
# Short searches (every preset but `reference`) warm the weights up for a third of the epochs, DARTS included:
# untrained convolutions lose to parameter-free ops at first (the reason PC-DARTS and P-DARTS warm up 30-40 %).
SHORT_SEARCH_WARMUP_FRACTION = 1 / 3
# The references' α budget, Adam lr x number of α steps: DARTS 3e-4 x 50 epochs x 391 steps (25,000 / 64);
# PC-DARTS 6e-4 x 35 x 98 (batch 256, 15 warm-up epochs); P-DARTS 6e-4 x 15 x 261 per stage (batch 96).
REFERENCE_ARC_LR = {'darts': 3e-4, 'pdarts': 6e-4, 'pcdarts': 6e-4}
REFERENCE_ARC_STEPS = {'darts': 50 * 391, 'pdarts': 15 * 261, 'pcdarts': 35 * 98}
# Short searches scale α's lr so that lr x steps is SHORT_SEARCH_ARC_BUDGET times that budget: their α gradients are
# noisier (weights trained for minutes), so Adam's normalised steps travel less. Measured on the cpu preset
# (DARTS order 1, seed 0): budget 1x ended at 2.17x / 1.84x uniform (normal / reduce), below the 2x that marks a
# decided search. The cap keeps one Adam step on α below 0.2 (α starts at 1e-3·N(0, 1)).
SHORT_SEARCH_ARC_BUDGET = 2.0
MAX_SCALED_ARC_LR = 0.2

PRESETS: Dict[str, Dict[str, Any]] = {
    # The papers' search settings (CIFAR-10 scale; a GPU job).
    'reference': dict(width=16, cells=8, epochs=50, subset=None, stage_cells=(5, 11, 17), stage_epochs=25),
    # Minutes on 2 CPU cores: C=8, 5 cells, 2,000 28x28 images. Batch 32 (not 64): a step costs 0.6x as much
    # on this CPU, so the same time buys 1.6x the α steps; the weight lr is DARTS' 0.025 for every strategy
    # (PC-DARTS' 0.1 goes with its batch 256). α's lr is scaled (REFERENCE_ARC_STEPS) and a third of the epochs
    # warm the weights up (SHORT_SEARCH_WARMUP_FRACTION).
    'cpu': dict(width=8, cells=5, epochs=3, subset=2000, batch_size=32, learning_rate=0.025, stage_cells=(3, 4, 5),
                stage_epochs=2),
    # Seconds: for tests and smoke runs.
    'tiny': dict(dataset='digits', width=8, cells=3, epochs=1, subset=256, batch_size=32, stage_cells=(3, 4, 5),
                 stage_epochs=1),
}


def arch_steps_per_epoch(settings: 'SearchSettings') -> int:
    """α steps per epoch of resolved settings: batches of the architecture half (last partial batch dropped)."""
    from .data import get_info
    images = settings.subset or get_info(settings.dataset).num_train
    steps = max(1, (images - images // 2) // settings.batch_size)
    return min(steps, settings.limit_train_batches or steps)


def scaled_arc_learning_rate(settings: 'SearchSettings') -> float:
    """α's Adam lr for a short search: :data:`SHORT_SEARCH_ARC_BUDGET` x the reference's lr x its α steps / this
    run's α steps (per P-DARTS stage), at least the reference lr and at most :data:`MAX_SCALED_ARC_LR`."""
    steps = max(1, settings.epochs - settings.warmup_epochs) * arch_steps_per_epoch(settings)
    reference = REFERENCE_ARC_LR[settings.strategy]
    scaled = SHORT_SEARCH_ARC_BUDGET * reference * REFERENCE_ARC_STEPS[settings.strategy] / steps
    return float(min(MAX_SCALED_ARC_LR, max(reference, scaled)))


@dataclass
class SearchSettings:
    """Everything a search run needs; ``None`` means the strategy's / preset's default."""

    strategy: str = 'darts'
    order: int = 1
    dataset: str = 'fashion-mnist'
    preset: Optional[str] = None
    subset: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    width: Optional[int] = None
    cells: Optional[int] = None
    nodes: int = 4
    ops: Optional[Sequence[str]] = None
    learning_rate: Optional[float] = None
    learning_rate_min: Optional[float] = None
    arc_learning_rate: Optional[float] = None
    warmup_epochs: Optional[int] = None
    k: int = 4
    stage_cells: Optional[Sequence[int]] = None
    stage_ops: Sequence[int] = (8, 5, 3)
    skip_dropout: Sequence[float] = (0.1, 0.4, 0.7)
    max_skip: int = 2
    seed: int = 0
    channels_last: bool = True
    augment: bool = True
    limit_train_batches: Optional[int] = None
    num_workers: int = 0
    data_dir: Optional[str] = None
    out: str = 'runs/search'
    progress_bar: bool = True
    # data parallel inside one search (issue #13; Lightning's Trainer names; None: Lightning's default)
    accelerator: Optional[str] = None
    devices: Optional[Any] = None
    num_nodes: int = 1
    strategy_backend: Optional[str] = None   # Lightning's `strategy` (ddp, ddp_spawn, ...): `strategy` is the NAS one
    sync_batchnorm: bool = False
    # > 0: train the derived network this many epochs on the training half, report its accuracy on the other half
    retrain_epochs: int = 0

    def resolved(self) -> 'SearchSettings':
        """Fill the ``None`` fields from the preset and the strategy's reference recipe."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f'strategy={self.strategy!r} is invalid; allowed: {list(STRATEGIES)}.')
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f'preset={self.preset!r} is invalid; allowed: {list(PRESETS)}.')
        values = dataclasses.asdict(self)
        preset = dict(PRESETS[self.preset or 'reference'])
        if self.strategy == 'pdarts':
            preset['epochs'] = preset.pop('stage_epochs')
        else:
            preset.pop('stage_epochs')
        recipe = REFERENCE_WEIGHT_RECIPE[self.strategy]
        for key, value in {**recipe, **preset}.items():
            if key == 'dataset':
                if self.dataset == SearchSettings.dataset:
                    values['dataset'] = value
            elif values.get(key) is None:
                values[key] = value
        short = (self.preset or 'reference') != 'reference'
        if values['warmup_epochs'] is None:
            # half-up rounding, and always at least one epoch that trains the architecture
            fraction = max(WARMUP_FRACTION[self.strategy], SHORT_SEARCH_WARMUP_FRACTION if short else 0.0)
            scaled = math.floor(values['epochs'] * fraction + 0.5)
            values['warmup_epochs'] = max(0, min(scaled, values['epochs'] - 1))
        settings = SearchSettings(**values)
        if settings.arc_learning_rate is None and short and settings.epochs > settings.warmup_epochs:
            settings.arc_learning_rate = scaled_arc_learning_rate(settings)
        if settings.strategy == 'pdarts':
            settings.cells = settings.stage_cells[-1]
        if settings.epochs < 1:
            raise ValueError(f'epochs={settings.epochs} is invalid; allowed: an integer >= 1.')
        if settings.warmup_epochs >= settings.epochs and settings.epochs > 0:
            raise ValueError(f'warmup_epochs={settings.warmup_epochs} leaves no epoch to train the architecture '
                             f'(epochs={settings.epochs}); allowed: 0 <= warmup_epochs < epochs.')
        return settings


@dataclass
class SearchResult:
    arch: Dict[str, Any]
    genotype: Any
    settings: SearchSettings
    seconds: float
    val_acc: Optional[float]
    params: int
    out: Path
    history: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        s = self.settings
        return {
            'dataset': s.dataset, 'strategy': s.strategy, 'order': s.order, 'epochs': s.epochs,
            'seconds': round(self.seconds, 1), 'supernet_val_acc': self.val_acc, 'params': self.params,
            'genotype': str(self.genotype) if self.genotype is not None else None,
            'normal_skip_connects': count_skips(self.genotype) if self.genotype is not None else None,
            'arch': self.arch, 'settings': dataclasses.asdict(s),
            'files': {'arch': str(self.out / 'arch.json'), 'genotype': str(self.out / 'genotype.txt'),
                      'logs': str(self.out / 'logs'), 'checkpoints': str(self.out / 'checkpoints'),
                      **self.extra.get('files', {})},
            **{k: v for k, v in self.extra.items() if k != 'files'},
        }

    @property
    def retrain_val_acc(self) -> Optional[float]:
        """Held-out accuracy of the briefly retrained derived network (``retrain_epochs`` > 0), else None."""
        return (self.extra.get('retrain') or {}).get('val_acc')

    def headline(self) -> str:
        acc = 'n/a' if self.val_acc is None else f'{self.val_acc:.4f}'
        if self.retrain_val_acc is not None:
            acc += (f', derived net retrained {self.settings.retrain_epochs} epochs: '
                    f'{self.retrain_val_acc:.4f} on the architecture half')
        return (f'{self.settings.strategy} (order {self.settings.order}) on {self.settings.dataset}: '
                f'{self.settings.epochs} epochs in {self.seconds:.0f} s, supernet val acc {acc}, '
                f'derived net {self.params / 1e3:.1f} k params; genotype {self.genotype}'
                + (f"; pictures: {', '.join(map(str, self.extra['files'].values()))}" if self.extra.get('files') else ''))


def build_strategy(settings: SearchSettings):
    """The NNI strategy object for resolved settings."""
    common = dict(order=settings.order, channels_last=settings.channels_last, warmup_epochs=settings.warmup_epochs)
    if settings.arc_learning_rate is not None:
        common['arc_learning_rate'] = settings.arc_learning_rate
    if settings.strategy == 'darts':
        from .strategies.darts import DartsStrategy
        return DartsStrategy(**common)
    if settings.strategy == 'pcdarts':
        from .strategies.pcdarts import PcDartsStrategy
        return PcDartsStrategy(k=settings.k, **common)
    from .strategies.pdarts import PDartsStrategy
    return PDartsStrategy(cells=tuple(settings.stage_cells), num_ops=tuple(settings.stage_ops),
                          skip_dropout=tuple(settings.skip_dropout), epochs_per_stage=settings.epochs,
                          max_skip=settings.max_skip, **common)


def build_space(settings: SearchSettings) -> DartsCellSpace:
    from .data import get_info
    info = get_info(settings.dataset)
    cells = settings.stage_cells[0] if settings.strategy == 'pdarts' else settings.cells
    return DartsCellSpace(width=settings.width, num_cells=cells, num_nodes=settings.nodes,
                          op_candidates=list(settings.ops) if settings.ops else None, in_channels=info.in_channels,
                          image_size=info.image_size, num_classes=info.num_classes)


def distributed_trainer_kwargs(settings: Any) -> Dict[str, Any]:
    """Lightning ``Trainer`` arguments of the data-parallel fields of a ``SearchSettings`` or ``RetrainConfig``
    (only those that are set).

    ``sync_batchnorm`` on CPU uses :class:`~nni_darts_ext.oneshot.distributed.CpuSyncBatchNormPlugin` (PyTorch's
    ``SyncBatchNorm`` refuses CPU tensors); on GPUs Lightning's own ``sync_batchnorm=True``.
    """
    kwargs: Dict[str, Any] = {}
    if settings.accelerator is not None:
        kwargs['accelerator'] = settings.accelerator
    if settings.devices is not None:
        kwargs['devices'] = _parse_devices(settings.devices)
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


def _parse_devices(devices: Any) -> Any:
    """``'2'`` -> 2, ``'0,1'`` stays (Lightning's device list syntax), ``'auto'``, ints and lists pass through."""
    if isinstance(devices, str) and devices.strip().lstrip('-').isdigit():
        return int(devices)
    return devices


def _callbacks(out: Path, extra: Sequence[Any]) -> List[Any]:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from .callbacks import ArchitectureLogger  # softmax(α)/β scalars and heat maps in TensorBoard (issue #7)
    return [ModelCheckpoint(dirpath=out / 'checkpoints', save_last=True, every_n_epochs=1), ArchitectureLogger(),
            *extra]


def run_search(settings: SearchSettings, callbacks: Sequence[Any] = ()) -> SearchResult:
    """Run the search of ``settings`` and write its outputs; returns the result."""
    import pytorch_lightning as pl
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from pytorch_lightning.loggers import TensorBoardLogger

    from .callbacks import export_probs
    from .data import get_info
    from .evaluator import search_evaluator
    from .oneshot.decision import decision_summary, describe_decision, edge_products
    from .oneshot.distributed import is_rank_zero

    settings = settings.resolved()
    get_info(settings.dataset)  # unknown names fail before anything is written
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    space = build_space(settings)
    strategy = build_strategy(settings)
    trainer_kwargs = dict(
        logger=TensorBoardLogger(save_dir=str(out), name='logs', version=''),
        callbacks=_callbacks(out, callbacks), enable_progress_bar=settings.progress_bar,
        default_root_dir=str(out), log_every_n_steps=1, num_sanity_val_steps=0)
    if settings.limit_train_batches:
        trainer_kwargs['limit_train_batches'] = settings.limit_train_batches
    trainer_kwargs.update(distributed_trainer_kwargs(settings))
    evaluator = search_evaluator(
        settings.dataset, recipe=settings.strategy, batch_size=settings.batch_size, subset=settings.subset,
        seed=settings.seed, root=settings.data_dir, max_epochs=settings.epochs, learning_rate=settings.learning_rate,
        learning_rate_min=settings.learning_rate_min, augment=settings.augment, num_workers=settings.num_workers,
        **trainer_kwargs)
    _logger.info('search: %s', settings)
    start = time.time()
    strategy.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    strategy.run()
    arch = next(iter(strategy.list_models())).sample
    seconds = time.time() - start
    module = strategy.search_module
    history = list(getattr(module, 'genotype_history', []))
    val_acc = next((h['val_acc'] for h in reversed(history) if h.get('val_acc') is not None), None)
    final_space = getattr(strategy, 'final_space', None) or space
    genotype = arch_to_genotype(arch)
    fixed = final_space.freeze(arch)
    probs = export_probs(module)
    decision = decision_summary(probs)
    extra = {**dict(getattr(strategy, 'result_extra', {}) or {}), 'probs': probs, 'decision': decision,
             'decision_text': describe_decision(decision)}
    products = edge_products(probs)
    if products:
        extra['edge_products'] = products
    result = SearchResult(arch=arch, genotype=genotype, settings=settings, seconds=seconds, val_acc=val_acc,
                          params=sum(p.numel() for p in fixed.parameters()), out=out,
                          history=[{**h, 'genotype': str(h.get('genotype'))} for h in history], extra=extra)
    if not is_rank_zero():  # under DDP every rank holds the same α; only rank 0 writes
        return result
    (_logger.info if all(c['decided'] for c in decision.values()) else _logger.warning)(
        'search: %s', extra['decision_text'])
    if settings.retrain_epochs > 0:
        extra['retrain'] = retrain_derived(settings, arch)
    _draw_result(result, module)
    save_arch(arch, out / 'arch.json')
    (out / 'genotype.txt').write_text(str(genotype) + '\n')
    _write_json(out / 'summary.json', {**result.summary(), 'history': _jsonable(result.history)})
    (out / 'summary.txt').write_text(result.headline() + '\n' + extra['decision_text'] + '\n')
    return result


def retrain_derived(settings: SearchSettings, arch: Dict[str, Any]) -> Dict[str, Any]:
    """A proxy of the found cell worth tuning (issue #13): the derived network, trained from scratch for
    ``settings.retrain_epochs`` epochs on the search's *training* half (the weights' half), evaluated on the
    *architecture* half. The test set is never used. Same width, depth, batch, seed and weight lr as the search; no
    auxiliary head, drop path or cutout (a few epochs). Outputs in ``out/retrain``."""
    from .data import search_dataloaders
    from .retrain import retrain
    train_loader, _ = search_dataloaders(settings.dataset, batch_size=settings.batch_size, subset=settings.subset,
                                         seed=settings.seed, root=settings.data_dir, augment=settings.augment,
                                         num_workers=settings.num_workers)
    _, held_out = search_dataloaders(settings.dataset, batch_size=settings.batch_size, subset=settings.subset,
                                     seed=settings.seed, root=settings.data_dir, augment=False,
                                     num_workers=settings.num_workers)
    out = Path(settings.out) / 'retrain'
    overrides = dict(epochs=settings.retrain_epochs, width=settings.width, cells=settings.cells,
                     batch_size=settings.batch_size, seed=settings.seed, auxiliary_weight=0.0, drop_path_prob=0.0,
                     cutout=0, val_every_n_epochs=0, channels_last=settings.channels_last,
                     limit_train_batches=settings.limit_train_batches)
    if settings.learning_rate is not None:
        overrides['learning_rate'] = settings.learning_rate
    result = retrain(arch, settings.dataset, out=out, resume=False, train_loader=train_loader, test_loader=held_out,
                     plots=False, progress_bar=False, **overrides)
    _logger.info('derived network after %d epochs on the training half: accuracy %.4f on the architecture half',
                 settings.retrain_epochs, result.test_acc)
    return {'val_acc': result.test_acc, 'val_loss': result.test_loss, 'epochs': settings.retrain_epochs,
            'params': result.params, 'seconds': round(result.seconds, 1), 'out': str(out)}


def _draw_result(result: SearchResult, module: Any) -> None:
    """Cell diagrams and final softmax(α)/β heat maps into ``out``, listed in the summary's files (issue #7)."""
    from .viz import PlotError, plot_genotype, save_heatmaps
    files = result.extra.setdefault('files', {})
    try:
        files.update(plot_genotype(result.genotype, result.out))
    except PlotError as err:
        _logger.warning('No cell pictures: %s', err)
    files.update(save_heatmaps(result.extra['probs'], result.out, result.genotype))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(_jsonable(data), indent=2))
    os.replace(tmp, path)
