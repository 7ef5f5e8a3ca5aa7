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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:  # the settings import without torch/NNI (fast --help); the functions import them
    from .space.network import DartsCellSpace

__all__ = ['SearchSettings', 'SearchResult', 'PRESETS', 'STRATEGIES', 'build_strategy', 'build_space', 'run_search']

_logger = logging.getLogger(__name__)

STRATEGIES = ('darts', 'pdarts', 'pcdarts')

# Per-strategy weight recipe of the reference code (batch, lr, lr_min): DARTS train_search.py; P-DARTS
# train_search.py (batch 96, cosine to 0); PC-DARTS train_search.py (batch 256, lr 0.1, cosine to 0).
REFERENCE_WEIGHT_RECIPE = {
    'darts': dict(batch_size=64, learning_rate=0.025, learning_rate_min=0.001),
    'pdarts': dict(batch_size=96, learning_rate=0.025, learning_rate_min=0.0),
    'pcdarts': dict(batch_size=256, learning_rate=0.1, learning_rate_min=0.0),
}
# Weight-only warm-up as a fraction of the epochs: PC-DARTS 15 of 50, P-DARTS 10 of 25 per stage.
WARMUP_FRACTION = {'darts': 0.0, 'pdarts': 10 / 25, 'pcdarts': 15 / 50}

PRESETS: Dict[str, Dict[str, Any]] = {
    # The papers' search settings (CIFAR-10 scale; a GPU job).
    'reference': dict(width=16, cells=8, epochs=50, subset=None, stage_cells=(5, 11, 17), stage_epochs=25),
    # Minutes on 2 CPU cores: C=8, 5 cells, a few thousand 28x28 images.
    'cpu': dict(width=8, cells=5, epochs=3, subset=1000, batch_size=64, stage_cells=(3, 4, 5), stage_epochs=2),
    # Seconds: for tests and smoke runs.
    'tiny': dict(dataset='digits', width=8, cells=3, epochs=1, subset=256, batch_size=32, stage_cells=(3, 4, 5),
                 stage_epochs=1),
}


def _opt(default: Any = None, help: str = '', **metadata: Any) -> Any:
    """A settings field with its command-line metadata (:mod:`nni_darts_ext.options`)."""
    if isinstance(default, (list, dict)):
        raise TypeError('use a tuple default')
    return field(default=default, metadata={'help': help, **metadata})


@dataclass
class SearchSettings:
    """Everything a search run needs; ``None`` means the strategy's / preset's default.

    Each field is a command-line option ``--field-name`` of ``search`` and of the trial (plus the aliases in its
    metadata) and a key of ``--config FILE.yaml``; a new field needs no other code.
    """

    strategy: str = _opt('darts', choices=STRATEGIES)
    order: int = _opt(1, 'DARTS order (1: xi = 0; 2: unrolled)', choices=(1, 2))
    dataset: Optional[str] = _opt(None, 'fashion-mnist | mnist | cifar10 | digits; an explicit one wins over the '
                                        'preset\'s (default: the preset\'s, else fashion-mnist)')
    preset: Optional[str] = _opt(None, 'reference: the papers\' settings (GPU scale); cpu: minutes on 2 cores; '
                                       'tiny: seconds', choices=tuple(PRESETS))
    subset: Optional[int] = _opt(None, 'use a seeded random subset of the training set')
    epochs: Optional[int] = _opt(None, 'search epochs (P-DARTS: per stage)')
    batch_size: Optional[int] = None
    width: Optional[int] = _opt(None, 'initial channels C')
    cells: Optional[int] = _opt(None, 'number of cells')
    nodes: int = 4
    ops: Optional[Sequence[str]] = _opt(None, 'candidate op names (default: the DARTS eight)')
    learning_rate: Optional[float] = _opt(None, 'weight learning rate', flags=('--lr',))
    learning_rate_min: Optional[float] = _opt(None, flags=('--lr-min',))
    arc_learning_rate: Optional[float] = _opt(None, 'architecture learning rate', flags=('--arc-lr',))
    warmup_epochs: Optional[int] = _opt(None, 'weight-only epochs (default: PC-DARTS 15/50, P-DARTS 10/25 of the '
                                              'epochs)')
    k: int = _opt(4, 'PC-DARTS partial-channel factor K')
    stage_cells: Optional[Sequence[int]] = _opt(None, 'P-DARTS cells per stage', nargs=3)
    stage_ops: Sequence[int] = _opt((8, 5, 3), 'P-DARTS ops per edge per stage', nargs=3)
    skip_dropout: Sequence[float] = _opt((0.1, 0.4, 0.7), 'P-DARTS skip-connect dropout per stage', nargs=3)
    max_skip: int = _opt(2, 'P-DARTS: skip-connects kept in the normal cell')
    seed: int = 0
    channels_last: bool = _opt(True, 'the channels_last memory format', negative='--contiguous')
    limit_train_batches: Optional[int] = None
    num_workers: int = _opt(0, 'data loader worker processes')
    data_dir: Optional[str] = _opt(None, 'dataset root (default $NNI_DARTS_EXT_DATA or ~/.cache)')
    out: str = _opt('runs/search', 'output folder')
    progress_bar: Optional[bool] = _opt(None, 'the Lightning progress bar (default: only on a terminal)')

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
            if values.get(key) is None:  # an explicit value (--dataset too) wins over the preset
                values[key] = value
        if values['dataset'] is None:
            values['dataset'] = 'fashion-mnist'
        if values['progress_bar'] is None:
            values['progress_bar'] = _on_terminal()
        if values['warmup_epochs'] is None:
            # half-up rounding, and always at least one epoch that trains the architecture
            scaled = math.floor(values['epochs'] * WARMUP_FRACTION[self.strategy] + 0.5)
            values['warmup_epochs'] = max(0, min(scaled, values['epochs'] - 1))
        settings = SearchSettings(**values)
        if settings.strategy == 'pdarts':
            settings.cells = settings.stage_cells[-1]
        if settings.epochs < 1:
            raise ValueError(f'epochs={settings.epochs} is invalid; allowed: an integer >= 1.')
        if settings.warmup_epochs >= settings.epochs and settings.epochs > 0:
            raise ValueError(f'warmup_epochs={settings.warmup_epochs} leaves no epoch to train the architecture '
                             f'(epochs={settings.epochs}); allowed: 0 <= warmup_epochs < epochs.')
        return settings


def _on_terminal() -> bool:
    import sys
    return sys.stderr.isatty()


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
        from .space.genotype import count_skips
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

    def headline(self) -> str:
        acc = 'n/a' if self.val_acc is None else f'{self.val_acc:.4f}'
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


def build_space(settings: SearchSettings) -> 'DartsCellSpace':
    from .data import get_info
    from .space.network import DartsCellSpace
    info = get_info(settings.dataset)
    cells = settings.stage_cells[0] if settings.strategy == 'pdarts' else settings.cells
    return DartsCellSpace(width=settings.width, num_cells=cells, num_nodes=settings.nodes,
                          op_candidates=list(settings.ops) if settings.ops else None, in_channels=info.in_channels,
                          image_size=info.image_size, num_classes=info.num_classes)


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

    from .data import get_info
    from .evaluator import search_evaluator
    from .space.genotype import arch_to_genotype, save_arch

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
    evaluator = search_evaluator(
        settings.dataset, batch_size=settings.batch_size, subset=settings.subset, seed=settings.seed,
        root=settings.data_dir, max_epochs=settings.epochs, learning_rate=settings.learning_rate,
        learning_rate_min=settings.learning_rate_min, **trainer_kwargs)
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
    result = SearchResult(arch=arch, genotype=genotype, settings=settings, seconds=seconds, val_acc=val_acc,
                          params=sum(p.numel() for p in fixed.parameters()), out=out,
                          history=[{**h, 'genotype': str(h.get('genotype'))} for h in history],
                          extra=dict(getattr(strategy, 'result_extra', {}) or {}))
    _draw_result(result, module)
    save_arch(arch, out / 'arch.json')
    (out / 'genotype.txt').write_text(str(genotype) + '\n')
    _write_json(out / 'summary.json', {**result.summary(), 'history': _jsonable(result.history)})
    (out / 'summary.txt').write_text(result.headline() + '\n')
    return result


def _draw_result(result: SearchResult, module: Any) -> None:
    """Cell diagrams and final softmax(α)/β heat maps into ``out``, listed in the summary's files (issue #7)."""
    from .callbacks import export_probs
    from .viz import PlotError, plot_genotype, save_heatmaps
    files = result.extra.setdefault('files', {})
    try:
        files.update(plot_genotype(result.genotype, result.out))
    except PlotError as err:
        _logger.warning('No cell pictures: %s', err)
    files.update(save_heatmaps(export_probs(module), result.out, result.genotype))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(_jsonable(data), indent=2))
    os.replace(tmp, path)
