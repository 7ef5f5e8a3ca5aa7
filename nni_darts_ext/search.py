"""Run a whole search from plain settings: data, space, evaluator, strategy, outputs (used by the CLI and trials).

Outputs in ``out``: ``arch.json`` (the NNI arch dict), ``genotype.txt``, ``summary.json``, TensorBoard logs under
``logs/`` and Lightning checkpoints under ``checkpoints/``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

# The settings live in the torch-free settings module; importable from here as before.
from .settings import (MAX_SCALED_ARC_LR, PRESET_ALIASES, PRESET_COST, PRESETS, REFERENCE_ARC_LR,  # noqa: F401
                       REFERENCE_ARC_STEPS, RESUME_FREE_SETTINGS, SHORT_SEARCH_ARC_BUDGET, SHORT_SEARCH_WARMUP_FRACTION,
                       STRATEGIES, WARMUP_FRACTION, WEIGHT_RECIPES, SearchSettings, arch_steps_per_epoch,
                       preset_cost_line, preset_defaults_help, preset_help, preset_name, scaled_arc_learning_rate)

if TYPE_CHECKING:  # the functions import torch and NNI
    from .space.network import DartsCellSpace

__all__ = ['SearchSettings', 'SearchResult', 'PRESETS', 'PRESET_ALIASES', 'preset_name', 'STRATEGIES',
           'build_strategy', 'build_space', 'run_search']

_logger = logging.getLogger(__name__)


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
    """:func:`nni_darts_ext.runner.distributed_trainer_kwargs` (its home; importable here as before)."""
    from .runner import distributed_trainer_kwargs as trainer_kwargs
    return trainer_kwargs(settings)


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

    from . import accel, rundir, runner
    from .callbacks import ArchitectureLogger, export_probs
    from .data import get_info
    from .evaluator import search_evaluator
    from .guards import DivergenceGuard
    from .oneshot.decision import at_chance, decision_summary, describe_decision, edge_products
    from .oneshot.distributed import is_rank_zero
    from .space.genotype import arch_to_genotype

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
    # softmax(α)/β scalars and heat maps in TensorBoard (ArchitectureLogger)
    trainer_kwargs = runner.trainer_kwargs(
        settings, out, runner.checkpoint_callback(out), [ArchitectureLogger(), guard, state, *callbacks],
        progress_bar=settings.progress_bar, log_every_n_steps=1)
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
    status = runner.RunStatus(out, seed=settings.seed, settings=record)
    if folder.restart:
        status.fields['restarted'] = 'resume found no checkpoint: the search started from the beginning'
    if folder.resume_from is not None:
        _logger.info('search: resuming %s', folder.resume_from)
        strategy.load_state_dict({'run_dir': str(out)} if hasattr(strategy, 'run_dir') else
                                 {'ckpt_path': str(folder.resume_from)})
        status.fields['resumed_from'] = str(folder.resume_from)
    status.running()
    with status.failures(explain=guard.explain, describe=str):
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


def _save_result(result: SearchResult, status: Any) -> None:
    from . import rundir
    from .space.genotype import save_arch
    out = result.out
    save_arch(result.arch, out / 'arch.json')
    rundir.atomic_write_text(out / 'genotype.txt', str(result.genotype) + '\n')
    status.finished(result.summary(), '\n'.join(filter(None, [result.headline(), result.extra.get('decision_text')]))
                    + '\n', history=_jsonable(result.history))


def _resume_check(folder: Any, settings: SearchSettings) -> Dict[str, Any]:
    """The settings recorded with the run; for a resume, refuse a corrupt checkpoint or changed settings."""
    from . import rundir
    from .runner import refuse_changed_settings
    record = _jsonable(dataclasses.asdict(settings))
    if folder.restart:  # killed before its first checkpoint: the settings are in its summary.json
        try:
            saved = json.loads((folder.path / 'summary.json').read_text()).get('settings')
        except (OSError, ValueError, AttributeError):
            saved = None
        if isinstance(saved, dict):
            refuse_changed_settings(saved, record, RESUME_FREE_SETTINGS, folder.path, 'search')
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
    refuse_changed_settings(saved, record, RESUME_FREE_SETTINGS, folder.path, 'search')
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
