"""The settings of a run, defined once and importable without torch or NNI (fast ``--help``).

What is here: the strategies' reference recipes (weights, α learning rate, warm-up), the presets of ``search`` and
``train`` and what each costs, :class:`SearchSettings` (one search) and :class:`RetrainSettings` (one retraining),
and the settings a resumed run may change. The command line, ``--config`` files and nnictl trial parameters are
generated from the dataclasses' fields (:mod:`nni_darts_ext.app.options`); the library
(:mod:`nni_darts_ext.search`, :mod:`nni_darts_ext.retrain`, :mod:`nni_darts_ext.evaluator`) reads them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

__all__ = ['STRATEGIES', 'WEIGHT_RECIPES', 'WARMUP_FRACTION', 'SHORT_SEARCH_WARMUP_FRACTION', 'REFERENCE_ARC_LR',
           'REFERENCE_ARC_STEPS', 'SHORT_SEARCH_ARC_BUDGET', 'MAX_SCALED_ARC_LR', 'PRESETS', 'PRESET_COST',
           'PRESET_ALIASES', 'RETRAIN_PRESETS', 'preset_name', 'preset_help', 'preset_cost_line',
           'preset_defaults_help', 'arch_steps_per_epoch', 'scaled_arc_learning_rate', 'SearchSettings',
           'RetrainSettings', 'RetrainConfig', 'RESUME_FREE_SETTINGS', 'RETRAIN_RESUME_FREE_SETTINGS']

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
# per P-DARTS stage): their α gradients are noisier, so Adam's normalised steps travel less (the measurements:
# docs/presets.md). The cap keeps one Adam step on α at most 0.3.
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


#: What each preset costs, per command: the expected wall time on 2 CPU cores and on one GPU, as measured ("not
#: measured" where no measurement exists; the sources: docs/presets.md). ``--help`` and a run's first log line show it.
PRESET_COST: Dict[str, Dict[str, str]] = {
    'search': {
        'reference': 'about 4 days on 2 CPU cores (DARTS order 1: 19,550 steps at 18.6 s, benchmarks); one GPU: not '
                     'measured here, the papers report 1.5 GPU-days (DARTS order 1), 4 (order 2), 0.3 (P-DARTS), '
                     '0.1 (PC-DARTS) on a GTX 1080Ti',
        'cpu': 'about 5 min on 2 idle CPU cores (DARTS order 2: 5 min 0-11 s; several times that on a loaded '
               'machine); a GPU is not needed',
        'tiny': 'seconds: 10-20 s on 2 idle CPU cores (P-DARTS 31 s on a loaded machine with --threads 1, minutes '
                'with more threads than free cores); for tests and smoke runs',
    },
    'train': {
        'reference': 'about 13 h on one H200 GPU (600 epochs at 76 s, benchmarks); weeks on 2 CPU cores',
        'cpu': 'about 5 min on 2 idle CPU cores (DARTS_V2 on Fashion-MNIST, 5 epochs); a GPU is not needed',
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
    # --num-cells: DartsCellSpace's name; `num_nodes` stays Lightning's machine count (DDP), so the cell's node count
    # keeps --nodes (--num-cell-nodes is its other spelling)
    cells: Optional[int] = _opt(None, 'number of cells', flags=('--num-cells', '--layers'))
    nodes: int = _opt(4, 'intermediate nodes per cell', flags=('--num-cell-nodes',))
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
    # against collapse, on every strategy (off by default: the papers' strategies; docs/groundtruth.md measures them)
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


@dataclass(frozen=True)
class RetrainSettings:
    """The evaluation recipe; defaults are quark0/darts ``cnn/train.py`` (CIFAR-10, DARTS appendix A.2.1)."""

    width: int = 36                  # --init_channels 36
    cells: int = field(default=20, metadata={'flags': ('--num-cells', '--layers')})  # --layers 20
    epochs: int = 600                # --epochs 600
    batch_size: int = 96             # --batch_size 96
    learning_rate: float = field(default=0.025, metadata={'flags': ('--lr',)})        # --learning_rate 0.025
    learning_rate_min: float = field(default=0.0, metadata={'flags': ('--lr-min',)})  # CosineAnnealingLR: eta_min 0
    momentum: float = 0.9            # --momentum 0.9
    weight_decay: float = 3e-4       # --weight_decay 3e-4
    gradient_clip_val: float = field(default=5.0, metadata={'flags': ('--grad-clip',)})  # --grad_clip 5 (norm)
    auxiliary_weight: float = field(default=0.4, metadata={'help': '0: no auxiliary head'})  # --auxiliary_weight 0.4
    drop_path_prob: float = 0.2      # --drop_path_prob 0.2, ramped: p * epoch / epochs
    cutout: int = field(default=16, metadata={'help': 'cutout length in pixels, 0: off'})  # --cutout_length 16
    augment: bool = field(default=True, metadata={'help': 'random crop with padding (+ horizontal flip on '
                                                          'CIFAR-10)'})
    subset: Optional[int] = None     # seeded random subset of the training set
    test_subset: Optional[int] = None
    limit_train_batches: Optional[int] = None
    val_every_n_epochs: int = field(default=1, metadata={'help': 'test-set evaluation interval, 0: at the end'})
    seed: int = 0
    channels_last: Optional[bool] = field(default=None, metadata={  # faster convolutions on CPU, 10 % slower on an H200
        'negative': '--contiguous', 'help': 'channels_last memory format (None: on CPU only)'})
    num_workers: int = field(default=0, metadata={'help': 'data loader worker processes'})
    accelerator: str = field(default='auto', metadata={
        'help': 'Lightning accelerator (cpu, gpu, auto); on a GPU also cudnn.benchmark and pinned memory'})
    devices: str = field(default='auto', metadata={'help': 'Lightning devices (a count, a list, or auto)'})
    precision: str = field(default='32-true', metadata={'help': 'Lightning precision, e.g. bf16-mixed'})
    compile: bool = field(default=False, metadata={'help': 'torch.compile the network (opt-in)'})
    num_nodes: int = field(default=1, metadata={'help': 'machines (DDP across nodes)'})
    strategy_backend: Optional[str] = field(default=None, metadata={
        'help': "Lightning's distributed strategy: ddp | ddp_spawn | ... (--strategy is taken by the NAS strategy)"})
    sync_batchnorm: bool = field(default=False, metadata={'help': 'batch-norm statistics over all processes'})

    def __post_init__(self):
        for name in ('width', 'cells', 'epochs', 'batch_size'):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f'{name}={getattr(self, name)!r} is invalid; allowed: an integer >= 1.')
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise ValueError(f'drop_path_prob={self.drop_path_prob} is invalid; allowed: 0 <= p < 1.')
        if self.auxiliary_weight < 0 or self.cutout < 0 or self.val_every_n_epochs < 0:
            raise ValueError('auxiliary_weight, cutout and val_every_n_epochs must be >= 0.')

    def replace(self, **changes: Any) -> 'RetrainSettings':
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise ValueError(f'Unknown retrain setting(s) {unknown}; allowed: {sorted(self.__dataclass_fields__)}.')
        return dataclasses.replace(self, **changes)


# The names are PRESETS' (``small`` is an alias of ``cpu``: PRESET_ALIASES), and so is each preset's dataset
# (PRESETS[name]['dataset']).
RETRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # The DARTS evaluation recipe (1.5 GPU-days on CIFAR-10).
    'reference': {},
    # Minutes on 2 CPU cores (Fashion-MNIST 28x28): 5 cells of C=8 (the search's cpu preset size; 5 M mult-adds),
    # 6,000 training images, 5 epochs, no cutout (16 px is tuned for 600 CIFAR epochs), auxiliary head and the
    # drop-path ramp kept; the full test set at the end.
    'cpu': dict(width=8, cells=5, epochs=5, batch_size=64, subset=6000, cutout=0, val_every_n_epochs=0),
    # Seconds: smoke runs and tests.
    # test_subset: 1,000 test images, not Fashion-MNIST's 10,000 (why: docs/presets.md).
    'tiny': dict(width=8, cells=3, epochs=1, batch_size=32, subset=256, test_subset=1000, cutout=0,
                 val_every_n_epochs=0),
}


#: The former name of :class:`RetrainSettings` (one suffix for settings classes); kept working.
RetrainConfig = RetrainSettings

# Settings that may differ between a search and its resumption (docs/reliability.md).
RESUME_FREE_SETTINGS = ('out', 'progress_bar', 'num_workers', 'data_dir', 'download')
# Settings that may change between a retraining and its resumption (everything else must match the checkpoint).
RETRAIN_RESUME_FREE_SETTINGS = ('num_workers', 'val_every_n_epochs', 'channels_last', 'accelerator', 'devices',
                                'precision', 'compile', 'num_nodes', 'strategy_backend', 'sync_batchnorm')
