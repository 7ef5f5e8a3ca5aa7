"""Run a whole search from plain settings: data, space, evaluator, strategy, outputs (used by the CLI and trials).

Outputs in ``out``: ``arch.json`` (the NNI arch dict), ``genotype.txt``, ``summary.json``, TensorBoard logs under
``logs/`` and Lightning checkpoints under ``checkpoints/``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence



if TYPE_CHECKING:  # the settings import without torch/NNI (fast --help); the functions import them
    from .space.network import DartsCellSpace

__all__ = ['SearchSettings', 'SearchResult', 'PRESETS', 'PRESET_ALIASES', 'preset_name', 'STRATEGIES',
           'build_strategy', 'build_space', 'run_search']

_logger = logging.getLogger(__name__)

STRATEGIES = ('darts', 'pdarts', 'pcdarts')

# Weight recipe of each reference search (batch, lr, lr_min; SGD momentum 0.9, wd 3e-4, cosine in all three):
# DARTS train_search.py (batch 64, lr 0.025 -> 0.001); P-DARTS train_search.py (batch 96, cosine to 0);
# PC-DARTS train_search.py (batch 256, lr 0.1 -> 0). Used by evaluator.search_evaluator(recipe=...).
WEIGHT_RECIPES: Dict[str, Dict[str, Any]] = {
    'darts': dict(batch_size=64, learning_rate=0.025, learning_rate_min=0.001),
    'pdarts': dict(batch_size=96, learning_rate=0.025, learning_rate_min=0.0),
    'pcdarts': dict(batch_size=256, learning_rate=0.1, learning_rate_min=0.0),
}
# Weight-only warm-up as a fraction of the epochs: PC-DARTS 15 of 50, P-DARTS 10 of 25 per stage; DARTS none.
WARMUP_FRACTION = {'darts': 0.0, 'pdarts': 10 / 25, 'pcdarts': 15 / 50}
# Short searches (every preset but `reference`) warm the weights up for a third of the epochs, DARTS included:
# untrained convolutions lose to parameter-free ops at first (the reason PC-DARTS and P-DARTS warm up 30-40 %).
SHORT_SEARCH_WARMUP_FRACTION = 1 / 3
# α's Adam lr x number of α steps, the "travel budget" of the references: DARTS 3e-4 x 50 epochs x 391 steps
# (25,000 / 64) = 5.9; PC-DARTS 6e-4 x 35 x 98 (batch 256, 15 warm-up epochs) = 2.1; P-DARTS 6e-4 x 15 x 261 per
# stage (batch 96) = 2.3.
REFERENCE_ARC_LR = {'darts': 3e-4, 'pdarts': 6e-4, 'pcdarts': 6e-4}
REFERENCE_ARC_STEPS = {'darts': 50 * 391, 'pdarts': 15 * 261, 'pcdarts': 35 * 98}
# Short searches (every preset but `reference`) give every strategy three times DARTS' budget (α lr = 17.6 / α steps,
# per P-DARTS stage): their α gradients are noisier (weights trained for minutes), so Adam's normalised steps travel
# less. Measured on the cpu preset, seed 0, mean max softmax(α) / uniform (normal, reduce; 2x uniform marks a decided
# search): DARTS order 1 at 1x DARTS' budget 2.17 / 1.84, at 2x 2.30 / 3.19; PC-DARTS at 2x its own budget
# 2.14 / 1.57, at 2x DARTS' 2.43 / 1.93; P-DARTS (2 epochs per stage) at 2x its own 1.91 / 1.63, at lr 0.3
# 2.16 / 1.74. The cap keeps one Adam step on α at most 0.3.
SHORT_SEARCH_ARC_BUDGET = 3.0 * REFERENCE_ARC_LR['darts'] * REFERENCE_ARC_STEPS['darts']
MAX_SCALED_ARC_LR = 0.3


PRESETS: Dict[str, Dict[str, Any]] = {
    # The papers' search settings (CIFAR-10 scale; a GPU job).
    # The papers' data: CIFAR-10 (python -m nni_darts_ext prepare-data cifar10 --download, or --download here).
    'reference': dict(dataset='cifar10', width=16, cells=8, epochs=50, subset=None, k=4,
                      stage_cells=(5, 11, 17), stage_epochs=25),
    # Minutes on 2 CPU cores: C=8, 5 cells, 2,000 28x28 images. Batch 32 (not 64): a step costs 0.6x as much
    # on this CPU, so the same time buys 1.6x the α steps; the weight lr is DARTS' 0.025 for every strategy
    # (PC-DARTS' 0.1 goes with its batch 256). α's lr is scaled (REFERENCE_ARC_STEPS) and a third of the epochs
    # warm the weights up (SHORT_SEARCH_WARMUP_FRACTION).
    # K=2 for PC-DARTS: at C=8, K=4 would leave 2 channels per op; K=2 keeps the reference's 4 (C=16, K=4).
    # P-DARTS: 3 epochs per stage (1 weight-only) so that each stage has as many α steps as the others' search.
    'cpu': dict(dataset='fashion-mnist', width=8, cells=5, epochs=3, subset=2000, batch_size=32, learning_rate=0.025,
                k=2,
                stage_cells=(3, 4, 5), stage_epochs=3),
    # Seconds: for tests and smoke runs.
    'tiny': dict(dataset='digits', width=8, cells=3, epochs=1, subset=256, batch_size=32, k=4, stage_cells=(3, 4, 5),
                 stage_epochs=1),
}


#: What each preset costs, per command: the expected wall time on 2 CPU cores and on one GPU, as measured (the
#: sources are named; "not measured" where no measurement exists). ``--help`` and the first log line of a run show it.
PRESET_COST: Dict[str, Dict[str, str]] = {
    'search': {
        # benchmarks/README: order 1 at the reference size 18.6 s per step on 2 cores x 50 epochs x 391 steps = 101 h;
        # one GPU: no search was timed on a GPU yet (benchmarks/gpu.py measures it), so the papers' figures.
        'reference': 'about 4 days on 2 CPU cores (DARTS order 1: 19,550 steps at 18.6 s, benchmarks); one GPU: not '
                     'measured here, the papers report 1.5 GPU-days (DARTS order 1), 4 (order 2), 0.3 (P-DARTS), '
                     '0.1 (PC-DARTS) on a GTX 1080Ti',
        # README command 1 (DARTS order 2), 4 interleaved runs on an idle 2-core machine, 2026-12-04
        'cpu': 'about 5 min on 2 idle CPU cores (DARTS order 2: 5 min 0-11 s; several times that on a loaded '
               'machine); a GPU is not needed',
        # idle: issue 22's measurement (10-18 s per search); loaded (load 10 on 2 cores, --threads 1):
        # benchmarks/results_tiny.md, `python -m benchmarks tiny` (DARTS 19 s, P-DARTS 31 s, PC-DARTS 21 s)
        'tiny': 'seconds: 10-20 s on 2 idle CPU cores (P-DARTS 31 s on a loaded machine with --threads 1, minutes '
                'with more threads than free cores); for tests and smoke runs',
    },
    'train': {
        # README "Retraining": 0.146 s per step on an H200, 76 s per CIFAR-10 epoch x 600 epochs
        'reference': 'about 13 h on one H200 GPU (600 epochs at 76 s, benchmarks); weeks on 2 CPU cores',
        'cpu': 'about 5 min on 2 idle CPU cores (DARTS_V2 on Fashion-MNIST, 5 epochs); a GPU is not needed',
        # idle: issue 22's measurement (14 s); loaded: benchmarks/results_tiny.md (17 s at load 10, --threads 1)
        'tiny': 'seconds: about 15 s on 2 idle CPU cores (17 s on a loaded machine with --threads 1); for tests and '
                'smoke runs',
    },
}


def preset_cost_line(command: str, preset: Optional[str]) -> str:
    """The first log line of a ``search`` / ``train`` run: the preset, its cost, and for ``reference`` (the
    default) that it is the GPU-scale setting and which preset runs in minutes on a CPU."""
    name = preset_name(preset)
    line = f'preset {name}: {PRESET_COST[command][name]}'
    if name == 'reference':
        line += ("; this is the papers' GPU-scale setting (the default): --preset cpu runs in minutes on a CPU, "
                 '--preset tiny in seconds')
    return line


def preset_help(command: str, head: str) -> str:
    """The ``--preset`` help of ``command``: ``head``, then each preset's expected wall time."""
    return head + ' Expected wall time: ' + '; '.join(f'{name}: {cost}'
                                                      for name, cost in PRESET_COST[command].items()) + '.'


#: Older preset names, kept working: ``train --preset small`` was the CPU preset before both commands shared names.
PRESET_ALIASES: Dict[str, str] = {'small': 'cpu'}


def preset_name(name: Optional[str]) -> str:
    """The canonical preset of ``name`` (``None``: ``reference``; an alias: its preset); ``ValueError`` naming the
    allowed ones otherwise. ``search`` and ``train`` share the names (and each preset's dataset)."""
    if name is None:
        return 'reference'
    name = PRESET_ALIASES.get(name, name)
    if name not in PRESETS:
        raise ValueError(f'preset={name!r} is invalid; allowed: {list(PRESETS)} (alias: '
                         + ', '.join(f'{old} = {new}' for old, new in PRESET_ALIASES.items()) + ').')
    return name


def preset_defaults_help() -> Dict[str, str]:
    """The default that ``--help`` shows for each field a preset or the strategy's recipe fills (``None`` here)."""
    def by_preset(key: str) -> str:
        values = ', '.join(f'{name} {"all" if preset.get(key, "") is None else preset.get(key, "recipe")}'
                           for name, preset in PRESETS.items())
        return f'per --preset: {values}'
    shown = {key: by_preset(key) for preset in PRESETS.values() for key in preset if key != 'stage_epochs'}
    shown['epochs'] += '; P-DARTS per stage: ' + by_preset('stage_epochs').split(': ', 1)[1]
    for key in WEIGHT_RECIPES['darts']:
        recipe = ', '.join(f'{strategy} {r[key]}' for strategy, r in WEIGHT_RECIPES.items())
        shown[key] = (f'{shown[key]}; ' if key in shown else '') + f'recipe: the strategy\'s reference ({recipe})'
    references = ', '.join(f'{strategy} {lr:g}' for strategy, lr in REFERENCE_ARC_LR.items())
    shown['arc_learning_rate'] = f"the strategy's reference ({references}); presets other than reference scale it"
    return shown


def arch_steps_per_epoch(settings: 'SearchSettings') -> int:
    """α steps per epoch of resolved settings: batches of the architecture half (last partial batch dropped)."""
    from .data import get_info
    images = settings.subset or get_info(settings.dataset).num_train
    steps = max(1, (images - images // 2) // settings.batch_size)
    return min(steps, settings.limit_train_batches or steps)


def scaled_arc_learning_rate(settings: 'SearchSettings') -> float:
    """α's Adam lr for a short search: :data:`SHORT_SEARCH_ARC_BUDGET` / this run's α steps (per P-DARTS stage), at
    least the strategy's reference lr and at most :data:`MAX_SCALED_ARC_LR`."""
    steps = max(1, settings.epochs - settings.warmup_epochs) * arch_steps_per_epoch(settings)
    reference = REFERENCE_ARC_LR[settings.strategy]
    return float(min(MAX_SCALED_ARC_LR, max(reference, SHORT_SEARCH_ARC_BUDGET / steps)))


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
                                        'preset\'s (default: the preset\'s: ' + ', '.join(
                                            f'{name} {p["dataset"]}' for name, p in PRESETS.items()) + ')')
    preset: Optional[str] = _opt(None, preset_help('search', 'reference: the papers\' settings (GPU scale); cpu: '
                                                             'minutes on 2 cores; tiny: seconds (default: '
                                                             'reference).'),
                                 choices=(*PRESETS, *PRESET_ALIASES))
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
    k: Optional[int] = _opt(None, 'PC-DARTS partial-channel factor K (default: the preset\'s: 4, cpu 2)')
    stage_cells: Optional[Sequence[int]] = _opt(None, 'P-DARTS cells per stage', nargs=3)
    stage_ops: Sequence[int] = _opt((8, 5, 3), 'P-DARTS ops per edge per stage', nargs=3)
    skip_dropout: Sequence[float] = _opt((0.1, 0.4, 0.7), 'P-DARTS skip-connect dropout per stage', nargs=3)
    max_skip: int = _opt(2, 'P-DARTS: skip-connects kept in the normal cell')
    # against collapse, on every strategy (issue #20; off by default: the papers' strategies)
    beta_decay: float = _opt(0.0, 'β-DARTS: λ of the Beta-Decay regularisation of α, ramped linearly from 0 over the '
                                  'epochs (reference 25 at 50 epochs); 0: off')
    smooth: float = _opt(0.0, 'SDARTS-RS: radius ε of the uniform noise on softmax(α) in the weight step, ramped from '
                              'ε/10 (reference 0.3); 0: off')
    hvp: str = _opt('finite_difference', 'order 2: Hessian-vector product of DARTS eq. 8 by the central finite '
                                         'difference or exact (double backward)',
                    choices=('finite_difference', 'exact'))
    fd_radius: float = _opt(0.01, 'order 2, finite difference: r in ε = r / ‖∇w\' L_val‖ (DARTS)')
    select: str = _opt('magnitude', 'how the cell is derived: magnitude (the strongest softmax(α), the papers\') or '
                                    'perturbation (DARTS-PT: the op / input whose removal costs the supernet the most '
                                    'accuracy; the table goes to summary.json)', choices=('magnitude', 'perturbation'))
    select_batches: Optional[int] = _opt(10, 'perturbation selection: validation batches per accuracy')
    select_tune_steps: int = _opt(10, 'perturbation selection: weight steps of fine-tuning between decisions')
    seed: int = 0
    channels_last: bool = _opt(True, 'the channels_last memory format', negative='--contiguous')
    augment: bool = _opt(True, 'random crop (and flip where allowed) of both search halves, as the '
                               'references')
    limit_train_batches: Optional[int] = _opt(None, 'at most this many batches per epoch (default: all)')
    num_workers: int = _opt(0, 'data loader worker processes')
    data_dir: Optional[str] = _opt(None, 'dataset root (default $NNI_DARTS_EXT_DATA or ~/.cache)')
    download: bool = _opt(False, 'let torchvision download CIFAR-10 into --data-dir when it is not there (needs '
                                 'internet; the same as prepare-data cifar10 --download first)')
    out: str = _opt('runs/search', 'output folder')
    progress_bar: Optional[bool] = _opt(None, 'the Lightning progress bar (default: only on a terminal)')
    accelerator: str = _opt('auto', 'Lightning accelerator (cpu, gpu, auto); on a GPU also cudnn.benchmark and '
                                   'pinned memory (accel.py)')
    devices: str = _opt('auto', 'Lightning devices (a count, a list, or auto)')
    precision: str = _opt('32-true', 'Lightning precision, e.g. bf16-mixed (the finite-difference HVP stays in '
                                     'float32: bilevel.py)')
    compile: bool = _opt(False, 'torch.compile the supernet (opt-in: slow to compile, pays on a GPU)')
    # data parallel inside one search (docs/distributed.md; Lightning's Trainer names)
    num_nodes: int = _opt(1, 'machines (DDP across nodes)')
    strategy_backend: Optional[str] = _opt(None, "Lightning's distributed strategy: ddp | ddp_spawn | ... (named so "
                                                 'because --strategy is the NAS strategy; default: Lightning\'s '
                                                 '"auto", DDP for several devices)')
    sync_batchnorm: bool = _opt(False, 'batch-norm statistics over the global batch of all processes (CPU: gloo)')
    retrain_epochs: int = _opt(0, 'train the derived network this many epochs on the training half and report its '
                                  'accuracy on the architecture half (the test set is never used); 0: off')

    def resolved(self) -> 'SearchSettings':
        """Fill the ``None`` fields from the preset and the strategy's reference recipe."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f'strategy={self.strategy!r} is invalid; allowed: {list(STRATEGIES)}.')
        values = dataclasses.asdict(self)
        if self.preset is not None:
            values['preset'] = preset_name(self.preset)
        preset = dict(PRESETS[preset_name(self.preset)])
        if self.strategy == 'pdarts':
            preset['epochs'] = preset.pop('stage_epochs')
        else:
            preset.pop('stage_epochs')
        recipe = WEIGHT_RECIPES[self.strategy]
        for key, value in {**recipe, **preset}.items():
            if values.get(key) is None:  # an explicit value (--dataset too) wins over the preset
                values[key] = value
        if values['dataset'] is None:
            values['dataset'] = 'fashion-mnist'
        if values['progress_bar'] is None:
            values['progress_bar'] = _on_terminal()
        short = preset_name(self.preset) != 'reference'
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
        _check_robust_options(settings)
        if settings.warmup_epochs >= settings.epochs and settings.epochs > 0:
            raise ValueError(f'warmup_epochs={settings.warmup_epochs} leaves no epoch to train the architecture '
                             f'(epochs={settings.epochs}); allowed: 0 <= warmup_epochs < epochs.')
        return settings


def _check_robust_options(settings: SearchSettings) -> None:
    """The issue-#20 options, checked before any data is read (the strategies check them again)."""
    for name in ('select', 'hvp'):
        allowed = dict((f.name, f.metadata.get('choices')) for f in dataclasses.fields(SearchSettings))[name]
        if getattr(settings, name) not in allowed:
            raise ValueError(f'{name}={getattr(settings, name)!r} is invalid; allowed: {", ".join(allowed)}.')
    checks = (('beta_decay', settings.beta_decay >= 0, '>= 0 (0: off)'),
              ('smooth', 0 <= settings.smooth <= 1, '0 <= smooth <= 1 (0: off)'),
              ('fd_radius', settings.fd_radius > 0, '> 0 (DARTS: 0.01)'),
              ('select_batches', settings.select_batches is None or settings.select_batches >= 1, '>= 1'),
              ('select_tune_steps', settings.select_tune_steps >= 0, '>= 0'))
    for name, ok, allowed in checks:
        if not ok:
            raise ValueError(f'{name}={getattr(settings, name)!r} is invalid; allowed: {allowed}.')


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
                + (f"; pictures: {', '.join(map(str, self.extra['files'].values()))}"
                   if self.extra.get('files') else ''))


def build_strategy(settings: SearchSettings):
    """The NNI strategy object for resolved settings."""
    common = dict(order=settings.order, channels_last=settings.channels_last, warmup_epochs=settings.warmup_epochs,
                  hvp=settings.hvp, fd_radius=settings.fd_radius, beta_decay=settings.beta_decay,
                  smooth=settings.smooth, select=settings.select, select_batches=settings.select_batches,
                  select_tune_steps=settings.select_tune_steps, select_seed=settings.seed)
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


def distributed_trainer_kwargs(settings: Any) -> Dict[str, Any]:
    """Lightning ``Trainer`` arguments of the data-parallel fields of a ``SearchSettings`` or ``RetrainConfig``
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


def _callbacks(out: Path, extra: Sequence[Any]) -> List[Any]:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from .callbacks import ArchitectureLogger  # softmax(α)/β scalars and heat maps in TensorBoard
    return [ModelCheckpoint(dirpath=out / 'checkpoints', save_last=True, every_n_epochs=1), ArchitectureLogger(),
            *extra]


# Settings that may differ between a search and its resumption (docs/reliability.md).
RESUME_FREE_SETTINGS = ('out', 'progress_bar', 'num_workers', 'data_dir', 'download')


def run_search(settings: SearchSettings, callbacks: Sequence[Any] = (), *, resume: Any = False,
               overwrite: bool = False) -> SearchResult:
    """Run the search of ``settings`` and write its outputs; returns the result.

    ``resume=True`` continues the run in ``settings.out`` from its newest checkpoint (same settings, or a
    ``RunFolderError`` lists the changed ones), or starts it again from the beginning when it stopped before its
    first checkpoint; ``'auto'`` resumes when there is a checkpoint. ``overwrite=True``
    deletes the run in ``settings.out`` first. Without either, a folder holding another run is refused
    (:mod:`nni_darts_ext.rundir`). A run that diverges raises :class:`~nni_darts_ext.guards.DivergenceError`.
    """
    import pytorch_lightning as pl
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from pytorch_lightning.loggers import TensorBoardLogger

    from . import accel, rundir
    from .callbacks import export_probs
    from .data import get_info
    from .evaluator import search_evaluator
    from .guards import DivergenceGuard
    from .oneshot.decision import at_chance, decision_summary, describe_decision, edge_products
    from .space.genotype import arch_to_genotype
    from .oneshot.distributed import is_rank_zero

    settings = settings.resolved()
    get_info(settings.dataset)  # unknown names fail before anything is written
    if settings.download:  # torchvision's download (CIFAR-10) into the data root, before anything is written
        from .data import prepare_data
        prepare_data(settings.data_dir, (settings.dataset,), download=True)
    out = Path(settings.out)
    folder = rundir.check_run_folder(out, resume=resume, overwrite=overwrite)
    record = _resume_check(folder, settings)
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    space = build_space(settings)
    strategy = build_strategy(settings)
    guard = DivergenceGuard({'--lr': settings.learning_rate, '--arc-lr': settings.arc_learning_rate})
    state = rundir.ResumeState(record)
    device_kwargs = accel.trainer_kwargs(settings.accelerator, settings.devices, settings.precision)
    if settings.compile:
        callbacks = [*callbacks, accel.CompileSupernet()]
    trainer_kwargs = dict(
        logger=TensorBoardLogger(save_dir=str(out), name='logs', version=''),
        callbacks=_callbacks(out, [guard, state, *callbacks]), enable_progress_bar=settings.progress_bar,
        default_root_dir=str(out), log_every_n_steps=1, num_sanity_val_steps=0,
        plugins=[rundir.AtomicCheckpointIO()], **device_kwargs)
    if settings.limit_train_batches:
        trainer_kwargs['limit_train_batches'] = settings.limit_train_batches
    distributed = distributed_trainer_kwargs(settings)
    trainer_kwargs['plugins'] = [*trainer_kwargs.get('plugins', []), *distributed.pop('plugins', [])]
    trainer_kwargs.update(distributed)
    evaluator = search_evaluator(
        settings.dataset, recipe=settings.strategy, batch_size=settings.batch_size, subset=settings.subset,
        seed=settings.seed, root=settings.data_dir, max_epochs=settings.epochs, learning_rate=settings.learning_rate,
        learning_rate_min=settings.learning_rate_min, augment=settings.augment, num_workers=settings.num_workers,
        pin_memory=accel.pin_memory(settings.accelerator), **trainer_kwargs)
    state.loaders = [evaluator.datamodule]
    if hasattr(strategy, 'run_dir'):  # P-DARTS: a checkpoint folder and a record file per stage
        strategy.run_dir, strategy.run_settings = out, record
    if folder.resume_from is not None:  # the run's own checkpoint holds NNI objects (labels), not only tensors
        evaluator.fit_kwargs['weights_only'] = False
    _logger.info(preset_cost_line('search', settings.preset))
    _logger.info('search: %s', settings)
    start = time.time()
    strategy.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    # every check passed: from here on the run writes into ``out``
    rundir.prepare_run_folder(folder)
    status = {'finished': False, 'seed': settings.seed, 'versions': rundir.versions(), 'settings': record}
    if folder.restart:
        status['restarted'] = 'resume found no checkpoint: the search started from the beginning'
    if folder.resume_from is not None:
        _logger.info('search: resuming %s', folder.resume_from)
        strategy.load_state_dict({'run_dir': str(out)} if hasattr(strategy, 'run_dir') else
                                 {'ckpt_path': str(folder.resume_from)})
        status['resumed_from'] = str(folder.resume_from)
    if is_rank_zero():
        rundir.atomic_write_json(out / 'summary.json', {**status, 'status': 'running'})
    try:
        strategy.run()
    except BaseException as err:
        reported = guard.explain(err)
        message = 'interrupted' if isinstance(err, KeyboardInterrupt) else str(reported)
        if is_rank_zero():
            rundir.atomic_write_json(out / 'summary.json', {**status, 'status': 'failed', 'error': message})
            rundir.atomic_write_text(out / 'summary.txt', f'FAILED: {message}\n')
        if reported is not err:
            raise reported from err
        raise
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
             'decision_text': describe_decision(decision, val_acc, get_info(settings.dataset).num_classes)}
    if settings.order == 2:  # α steps whose ∇_w' L_val(w', α) was 0: hypergradient ∇_α L_val(w', α)
        extra['zero_direction_steps'] = sum(int(h.get('zero_direction_steps', 0)) for h in history)
    products = edge_products(probs)
    if products:
        extra['edge_products'] = products
    result = SearchResult(arch=arch, genotype=genotype, settings=settings, seconds=seconds, val_acc=val_acc,
                          params=sum(p.numel() for p in fixed.parameters()), out=out,
                          history=[{**h, 'genotype': str(h.get('genotype'))} for h in history], extra=extra)
    if not is_rank_zero():  # under DDP every rank holds the same α; only rank 0 writes
        return result
    meaningful = all(c['decided'] for c in decision.values()) and not at_chance(
        val_acc, get_info(settings.dataset).num_classes)
    (_logger.info if meaningful else _logger.warning)(
        'search: %s', extra['decision_text'])
    if settings.retrain_epochs > 0:
        extra['retrain'] = retrain_derived(settings, arch)
    _save_result(result, status)  # the results first: a picture that fails must not lose them
    try:
        _draw_result(result, module)
    except Exception as err:  # noqa: BLE001 -- pictures are a convenience; the search result is saved
        _logger.warning('No pictures: %s: %s', type(err).__name__, err)
    _save_result(result, status)  # again, with the pictures' files
    return result


def _save_result(result: SearchResult, status: Dict[str, Any]) -> None:
    from . import rundir
    from .space.genotype import save_arch
    out = result.out
    save_arch(result.arch, out / 'arch.json')
    rundir.atomic_write_text(out / 'genotype.txt', str(result.genotype) + '\n')
    rundir.atomic_write_json(out / 'summary.json', {
        **result.summary(), **{k: v for k, v in status.items() if k != 'settings'}, 'finished': True,
        'status': 'finished', 'history': _jsonable(result.history)})
    rundir.atomic_write_text(out / 'summary.txt', '\n'.join(
        filter(None, [result.headline(), result.extra.get('decision_text')])) + '\n')


def _resume_check(folder: Any, settings: SearchSettings) -> Dict[str, Any]:
    """The settings recorded with the run; for a resume, refuse a corrupt checkpoint or changed settings."""
    from . import rundir
    record = _jsonable(dataclasses.asdict(settings))
    if folder.restart:  # killed before its first checkpoint: the settings are in its summary.json
        try:
            saved = json.loads((folder.path / 'summary.json').read_text()).get('settings')
        except (OSError, ValueError, AttributeError):
            saved = None
        changed = rundir.compare_settings(saved, record, free=RESUME_FREE_SETTINGS) if isinstance(saved, dict) else []
        if changed:
            raise rundir.RunFolderError(f'Cannot resume {folder.path} with other settings: {"; ".join(changed)}. '
                                        'Resume with the settings of the run, or pass --overwrite to start a new '
                                        'search there.')
        return record  # rundir.prepare_run_folder says that the run starts from the beginning
    if folder.resume_from is None:
        return record
    if folder.resume_from.suffix == '.json':  # P-DARTS between two stages: the finished stage's record
        try:
            saved = json.loads(folder.resume_from.read_text()).get('settings')
        except (OSError, ValueError, AttributeError) as err:
            raise rundir.RunFolderError(f'{folder.resume_from} cannot be read ({err}); pass --overwrite to start '
                                        f'a new search in {folder.path}.') from None
    else:
        saved = rundir.saved_settings(rundir.load_checkpoint(folder.resume_from))
    if saved is None:
        raise rundir.RunFolderError(f'{folder.resume_from} records no search settings (not a checkpoint of '
                                    f'`search`); pass --overwrite to start a new search in {folder.path}.')
    changed = rundir.compare_settings(saved, record, free=RESUME_FREE_SETTINGS)
    if changed:
        raise rundir.RunFolderError(f'Cannot resume {folder.path} with other settings: {"; ".join(changed)}. Resume '
                                    'with the settings of the run, or pass --overwrite to start a new search there.')
    return record


def retrain_derived(settings: SearchSettings, arch: Dict[str, Any]) -> Dict[str, Any]:
    """A proxy of the found cell worth tuning (README, "Reliability and scale-out"): the derived network, trained
    from scratch for ``settings.retrain_epochs`` epochs on the search's *training* half (the weights' half),
    evaluated on the *architecture* half. The test set is never used. Same width, depth, batch, seed and weight lr as
    the search; no auxiliary head, drop path or cutout (a few epochs). Outputs in ``out/retrain``."""
    from .data import DartsDataModule
    from .retrain import retrain
    halves = dict(batch_size=settings.batch_size, subset=settings.subset, seed=settings.seed, root=settings.data_dir,
                  num_workers=settings.num_workers)
    train_loader = DartsDataModule(settings.dataset, augment=settings.augment, **halves).train_dataloader()
    held_out = DartsDataModule(settings.dataset, augment=False, **halves).val_dataloader()
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
    """Cell diagrams and final softmax(α)/β heat maps into ``out``, listed in the summary's files."""
    from .viz import PlotError, plot_genotype, save_heatmaps
    files = result.extra.setdefault('files', {})
    try:
        files.update(plot_genotype(result.genotype, result.out))
    except PlotError as err:
        _logger.warning('No cell pictures: %s', err)
    files.update(save_heatmaps(result.extra['probs'], result.out, result.genotype))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
