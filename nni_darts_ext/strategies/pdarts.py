"""``PDartsStrategy``: Progressive DARTS (Chen, Xie, Wu, Tian, "Progressive Differentiable Architecture Search:
Bridging the Depth Gap between Search and Evaluation", ICCV 2019; code: chenxin061/pdarts) as an NNI 3.0 strategy.

The search runs in stages. Each stage builds a fresh supernet of the user's space at a greater depth with, on every
edge, only the ops that survived the previous stage; trains it (weights re-initialised, a fresh Trainer with the
evaluator's settings for ``epochs_per_stage`` epochs, the first ``warmup_epochs`` weight-only); then drops the weakest
ops of every edge by softmax(α) (``none`` competes like any op until the last stage). Stride-1 skip-connects carry an
operation-level dropout whose rate decays within a stage. After the last stage the cells are derived without
``none`` and the normal cell keeps at most ``max_skip`` skip-connects.

A space without DARTS cells can declare its searched edges instead (``pdarts_edges()`` and ``recreate()``, as
:class:`~nni_darts_ext.groundtruth.space.NasBench201Grey`): every stage is then a fresh copy of the space at its own
depth, the pruned ops are dropped from the mixed ops of the supernet (the space's cells are not changed), and the M
limit counts the skip-connects over those edges, each edge keeping its strongest op.

Which spaces qualify is checked by :mod:`.pdarts_space`; the per-stage records and the result are in
:mod:`.pdarts_records`; the mixed ops and the search module of a stage in :mod:`nni_darts_ext.oneshot.pdarts`.
"""
from __future__ import annotations

import copy
import functools
import gc
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from nni.common.serializer import is_traceable
from nni.nas.evaluator.pytorch import Lightning
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import ModelStatus, RawFormatModelSpace

from ..oneshot.pdarts import PDartsMixedLayer, PDartsSearchModule, PDartsStage, prune_edges
from ..space.genotype import Genotype, arch_to_genotype, count_skips
from .darts import DartsStrategy
from .pdarts_records import PDartsResult, PDartsStageRecord
from .pdarts_space import SPACE_REQUIREMENT, check_space, edge_candidates, is_edge_space

__all__ = ['PDartsStrategy', 'PDartsStageRecord', 'PDartsResult']  # the records: pdarts_records.py

_logger = logging.getLogger(__name__)

def _per_stage(value: Any, name: str, num_stages: Optional[int], number: bool = False) -> Tuple[Any, ...]:
    """One value per stage: ints (``number=False``) or real numbers (``number=True``)."""
    kinds = (int, float) if number else (int,)
    values = tuple(value) if isinstance(value, (list, tuple)) else None
    if values is None or not values or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in values):
        raise ValueError(f'PDartsStrategy: {name}={value!r} is invalid; allowed: a list of '
                         f'{"numbers" if number else "integers"}, one per stage.')
    if num_stages is not None and len(values) != num_stages:
        raise ValueError(f'PDartsStrategy: {name}={value!r} has {len(values)} values but there are {num_stages} '
                         'stages (cells, or num_ops when cells=None); give one value per stage.')
    return tuple(float(v) for v in values) if number else values


class PDartsStrategy(DartsStrategy):
    """P-DARTS: progressive depth, per-edge op pruning, skip-connect dropout and the limit of M skip-connects.

    Defaults are the P-DARTS CIFAR-10 search (paper §4.1 and the command in chenxin061/pdarts' README:
    ``--add_layers 6 --add_layers 12 --dropout_rate 0.1 --dropout_rate 0.4 --dropout_rate 0.7``; 25 epochs per
    stage, the first 10 weight-only; arch Adam lr 6e-4; arch gradients clipped to 5 like the weights'; first order).
    The code's own dropout default is 0; its author also quotes initial rates (0.0, 0.4, 0.7).

    The space must be re-creatable at another depth with fewer ops per edge (:class:`~nni_darts_ext.DartsCellSpace`
    is), or declare its searched edges (``pdarts_edges()``, ``recreate()``; NAS-Bench-201, below). The strategy owns
    the epochs: every stage gets a fresh Trainer with the evaluator's settings but
    ``max_epochs=epochs_per_stage``; the evaluator's own ``max_epochs`` is not used. The exported arch (``'dict'``)
    belongs to the full-depth evaluation space: ``space.freeze(arch)`` on the user's space.

    Parameters
    ----------
    cells
        Supernet depth (number of cells) of each stage (reference 5, 11, 17); at least 3 each (with fewer cells
        there is no normal cell). ``None``: every stage keeps the space's own depth (one stage per ``num_ops``);
        required on a space without DARTS cells.
    num_ops
        Candidate ops per edge searched in each stage (reference 8, 5, 3). The first must equal the number of
        candidates on the space's edges; after stage s each edge keeps its ``num_ops[s + 1]`` strongest ops.
    skip_dropout
        Initial skip-connect dropout rate of each stage (README command 0.1, 0.4, 0.7).
    epochs_per_stage
        Epochs of every stage (25).
    warmup_epochs
        The first epochs of every stage only train the weights (10); also the W of the dropout schedule.
        Must be smaller than ``epochs_per_stage`` (otherwise α is never trained).
    max_skip
        M: skip-connects kept at most in the final normal cell (2); ``None`` for no limit.
    arc_learning_rate, arc_gradient_clip_val, order
        α's Adam learning rate (6e-4), its gradient-norm clip (5) and the DARTS order (1; 2 is allowed).
    **kwargs
        Other :class:`DartsStrategy` arguments (``gradient_clip_val``, ``arc_betas``, ``arc_weight_decay``, ``xi``,
        ``hvp``, ``channels_last``, ...).

    **NAS-Bench-201** (:class:`~nni_darts_ext.groundtruth.space.NasBench201Grey`): pass ``cells=None`` and, for its
    five ops, e.g. ``num_ops=(5, 3, 2)``. The depth is not progressive there: the ground-truth evaluation network has
    one cell per stage, the network searched in every stage (``recreate(num_modules_per_stack=...)`` could deepen
    it, but the table's network is not deeper). What P-DARTS keeps is the op pruning per edge between the stages
    (the pruned ops are removed from the supernet's mixed ops; NNI's cell is unchanged), the skip-connect dropout
    (NNI's ``skip_connect`` is an ``nn.Identity``) and the M limit, which counts the skip-connects over the six
    ``cell/i_j`` edges (all kept): the weakest skip-connect edges take their next strongest op until at most
    ``max_skip`` remain. Every edge exports its strongest non-``none`` op, as :class:`DartsStrategy`.
    """

    weight_recipe = 'pdarts'

    def __init__(self, cells: Sequence[int] = (5, 11, 17), num_ops: Sequence[int] = (8, 5, 3),
                 skip_dropout: Sequence[float] = (0.1, 0.4, 0.7), epochs_per_stage: int = 25,
                 warmup_epochs: int = 10, max_skip: Optional[int] = 2, *, arc_learning_rate: float = 6e-4,
                 arc_gradient_clip_val: Optional[float] = 5.0, order: int = 1, **kwargs: Any):
        self.cells = None if cells is None else _per_stage(cells, 'cells', None)
        self.num_ops = _per_stage(num_ops, 'num_ops', None if self.cells is None else len(self.cells))
        self.num_stages = len(self.num_ops)
        self.skip_dropout = _per_stage(skip_dropout, 'skip_dropout', self.num_stages, number=True)
        if self.cells is not None and any(c < 3 for c in self.cells):
            raise ValueError(f'PDartsStrategy: cells={list(self.cells)} is invalid; allowed: at least 3 cells per '
                             'stage (reduction cells sit at 1/3 and 2/3 of the depth, so with fewer cells there is '
                             'no normal cell to search).')
        if any(k < 2 for k in self.num_ops) or any(b > a for a, b in zip(self.num_ops, self.num_ops[1:])):
            raise ValueError(f'PDartsStrategy: num_ops={list(self.num_ops)} is invalid; allowed: non-increasing '
                             'counts of at least 2 ops per edge (reference 8, 5, 3).')
        if any(not 0.0 <= p < 1.0 for p in self.skip_dropout):
            raise ValueError(f'PDartsStrategy: skip_dropout={list(self.skip_dropout)} is invalid; allowed: rates '
                             'with 0 <= rate < 1.')
        if not isinstance(epochs_per_stage, int) or epochs_per_stage < 1:
            raise ValueError(f'PDartsStrategy: epochs_per_stage={epochs_per_stage!r} is invalid; allowed: an '
                             'integer >= 1.')
        if not isinstance(warmup_epochs, int) or not 0 <= warmup_epochs < epochs_per_stage:
            raise ValueError(f'PDartsStrategy: warmup_epochs={warmup_epochs!r} is invalid with epochs_per_stage='
                             f'{epochs_per_stage}: the architecture is only trained after the warm-up, so allowed '
                             f'is 0 <= warmup_epochs < epochs_per_stage (reference 10 of 25).')
        if max_skip is not None and (not isinstance(max_skip, int) or max_skip < 0):
            raise ValueError(f'PDartsStrategy: max_skip={max_skip!r} is invalid; allowed: an integer >= 0 or None.')
        self.epochs_per_stage = epochs_per_stage
        self.max_skip = max_skip
        super().__init__(order=order, arc_learning_rate=arc_learning_rate,
                         arc_gradient_clip_val=arc_gradient_clip_val, warmup_epochs=warmup_epochs, **kwargs)
        self.result = PDartsResult(max_skip=max_skip)
        self._stage: Optional[PDartsStage] = None
        self._datamodule_fns: Optional[Tuple[Any, Any]] = None
        self._genotype_history: List[Dict[str, Any]] = []  # every stage's per-epoch entries, shared by the modules
        self._final_space: Any = None
        self._supernet_candidates: Optional[Dict[str, List[str]]] = None  # set while a stage's supernet is built
        # Set by run_search (docs/reliability.md): every stage checkpoints into run_dir/checkpoints/stage<n>/ and
        # writes its record to run_dir/stages/stage<n>.json when it ends; load_state_dict({'run_dir': ...}) resumes
        # from them.
        self.run_dir: Optional[Path] = None
        self.run_settings: Optional[Dict[str, Any]] = None
        self._resuming = False

    def extra_repr(self) -> str:
        cells = None if self.cells is None else list(self.cells)
        return (f'cells={cells}, num_ops={list(self.num_ops)}, skip_dropout={list(self.skip_dropout)}, '
                f'epochs_per_stage={self.epochs_per_stage}, warmup_epochs={self.config.warmup_epochs}, '
                f'max_skip={self.max_skip}, order={self.config.order}')

    # --- NNI strategy hooks -------------------------------------------------------------------------------------------
    def default_mutation_hooks(self) -> List[Any]:
        candidates = getattr(self, '_supernet_candidates', None)
        if candidates is not None:  # a stage of a space without DARTS cells: its mixed ops keep the surviving ops
            return [functools.partial(PDartsMixedLayer.mutate, candidates=candidates),
                    *super().default_mutation_hooks()]
        return [PDartsMixedLayer.mutate, *super().default_mutation_hooks()]

    def configure_oneshot_module(self, training_module) -> PDartsSearchModule:
        if self._stage is None:
            raise RuntimeError('PDartsStrategy builds one search module per stage inside run(); there is no '
                               'single supernet to mutate before it.')
        self.check_weight_recipe(training_module)
        module = PDartsSearchModule(training_module, self.config, self._stage)
        module.genotype_history = self._genotype_history  # one history across the stages (entries carry 'stage')
        return module

    @property
    def stage_history(self) -> List[PDartsStageRecord]:
        return self.result.stages

    def _initialize(self, model_space: RawFormatModelSpace, engine: SequentialExecutionEngine) -> RawFormatModelSpace:
        """Check everything the stages need before any training; the user's space is left as it is (no supernet)."""
        if not isinstance(model_space, RawFormatModelSpace):
            raise TypeError('One-shot strategy only supports RawFormatModelSpace.')
        if not isinstance(engine, SequentialExecutionEngine):
            raise TypeError('One-shot strategy only supports SequentialExecutionEngine.')
        evaluator = model_space.evaluator
        if not isinstance(evaluator, Lightning):
            raise TypeError('PDartsStrategy needs a Lightning evaluator (e.g. nni_darts_ext.evaluator.'
                            f'search_evaluator), got {type(evaluator).__name__}.')
        if evaluator.datamodule is None and (evaluator.train_dataloaders is None or evaluator.val_dataloaders is None):
            raise ValueError('Training and validation dataloader are both required to set in evaluator for one-shot '
                             'strategy.')
        if evaluator.datamodule is not None:
            self._datamodule_fns = (evaluator.datamodule.train_dataloader, evaluator.datamodule.val_dataloader)
        self.check_space(model_space.model_space)
        self.result = PDartsResult(max_skip=self.max_skip)
        self._genotype_history = []
        self._final_space = None
        return model_space

    is_edge_space = staticmethod(is_edge_space)

    def check_space(self, space: Any) -> Dict[str, List[str]]:
        """Raise one clear error unless ``space`` can be searched by P-DARTS with this strategy's ``num_ops`` and
        ``cells``; return its candidates per edge (:func:`~nni_darts_ext.strategies.pdarts_space.check_space`)."""
        return check_space(space, self.num_ops, self.cells)

    def _stage_depths(self, space: Any) -> Tuple[int, ...]:
        """The depth of every stage: ``cells``, or the space's own (``num_cells``) when ``cells`` is None."""
        if self.cells is not None:
            return self.cells
        return (int(getattr(space, 'num_cells', 0)),) * self.num_stages

    def _run(self) -> None:
        user_space = self.model_space.model_space
        evaluator = self.model_space.evaluator
        candidates = self.check_space(user_space)
        skip_edges = tuple(candidates) if self.is_edge_space(user_space) else None
        done = self._saved_stages() if self._resuming else []
        for index, num_cells in enumerate(self._stage_depths(user_space)):
            final = index == self.num_stages - 1
            if index < len(done) and not final:  # finished before the search was stopped: its record is on disk
                record, saved = done[index]
                self.result.stages.append(record)
                candidates = {label: list(names) for label, names in record.kept_ops.items()}
                self._genotype_history[:] = saved.get('history', [])
                torch.set_rng_state(torch.tensor(saved['rng_state'], dtype=torch.uint8))
                for sampler, epoch in zip(self._samplers(evaluator), saved.get('sampler_epochs', [])):
                    sampler.epoch = epoch  # the data order continues
                _logger.info('P-DARTS stage %d: restored from %s', index + 1, self._stage_file(index))
                continue
            self._stage = PDartsStage(
                index=index, num_stages=self.num_stages, num_cells=num_cells,
                candidates={label: tuple(names) for label, names in candidates.items()},
                skip_dropout=self.skip_dropout[index], epochs=self.epochs_per_stage,
                max_skip=self.max_skip if final else None, skip_edges=skip_edges)
            start = time.time()
            module = self._run_stage(user_space, evaluator, candidates)
            record = self._record_stage(module, time.time() - start)
            if not final:
                weights, names = module.edge_weights()
                candidates = prune_edges(weights, names, self.num_ops[index + 1])
                record.kept_ops = candidates
                # one line: the ops of every edge go to summary.json (pdarts.stages[i].kept_ops), not the log
                _logger.info('P-DARTS stage %d: kept %d ops per edge on %d edges for stage %d (the ops: '
                             'pdarts.stages[%d].kept_ops in summary.json)', index + 1, self.num_ops[index + 1],
                             len(candidates), index + 2, index)
                del module, weights, names
                self._release(self._mutated_model_space)
            self.result.stages.append(record)
            self._save_stage(record)
        self._finish(module)

    # --- stage files (docs/reliability.md) ----------------------------------------------------------------------------
    def _stage_dir(self, index: int) -> Optional[Path]:
        return None if self.run_dir is None else Path(self.run_dir) / 'checkpoints' / f'stage{index + 1}'

    def _stage_file(self, index: int) -> Optional[Path]:
        return None if self.run_dir is None else Path(self.run_dir) / 'stages' / f'stage{index + 1}.json'

    def _save_stage(self, record: PDartsStageRecord) -> None:
        """Write the finished stage's record, surviving ops, history and random state (atomically)."""
        path = self._stage_file(record.stage - 1)
        if path is None:
            return
        from ..rundir import atomic_write_json
        atomic_write_json(path, {**record.to_dict(), 'settings': self.run_settings,
                                 'history': json.loads(json.dumps(self._genotype_history, default=str)),
                                 'rng_state': torch.get_rng_state().tolist(),
                                 'sampler_epochs': [s.epoch for s in self._samplers(self.model_space.evaluator)]})

    @staticmethod
    def _samplers(evaluator: Any) -> List[Any]:
        """The seeded samplers (with an ``epoch`` counter) of the evaluator's two data halves."""
        samplers = list(getattr(evaluator.datamodule, 'samplers', {}).values()) or [
            getattr(loader, 'sampler', None) for loader in (evaluator.train_dataloaders, evaluator.val_dataloaders)]
        return [s for s in samplers if s is not None and isinstance(getattr(s, 'epoch', None), int)]

    def _saved_stages(self) -> List[Tuple[PDartsStageRecord, Dict[str, Any]]]:
        """The consecutive finished stages on disk, from stage 1."""
        done = []
        for index in range(self.num_stages):
            path = self._stage_file(index)
            if path is None or not path.is_file():
                break
            saved = json.loads(path.read_text())
            done.append((PDartsStageRecord.from_dict(saved), saved))
        return done

    @staticmethod
    def _release(stage_space: Optional[RawFormatModelSpace]) -> None:
        """Drop a finished stage's supernet, Trainer and optimiser state (the reference ``del``s its model between
        stages): the engine keeps every submitted model, so a 17-cell stage would otherwise share the device with
        the earlier supernets. Only the record of the stage is kept."""
        if stage_space is None:
            return
        stage_space.model_space = None
        stage_space.evaluator = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _run_stage(self, user_space: Any, evaluator: Lightning, candidates: Dict[str, List[str]]) -> PDartsSearchModule:
        stage = self._stage
        assert stage is not None
        if stage.skip_edges is not None:
            # a fresh copy at the space's depth; the pruned ops are left out of the supernet's mixed ops (the hook)
            space = user_space.recreate()
            self._supernet_candidates = candidates
            try:
                supernet = self.mutate_model(space)
            finally:
                self._supernet_candidates = None
            built = {}
            for module in supernet.modules():
                if isinstance(module, PDartsMixedLayer) and module.label in candidates:
                    built.setdefault(module.label, list(module.names))
            if built != candidates:
                raise RuntimeError(f'P-DARTS stage {stage.index + 1}: the supernet of {type(user_space).__name__} has '
                                   f'the candidates {built}, not the requested {candidates}.')
        else:
            space = user_space.recreate(num_cells=stage.num_cells, op_candidates=candidates)
            built = edge_candidates(space)
            if built != candidates or getattr(space, 'num_cells', stage.num_cells) != stage.num_cells:
                raise RuntimeError(f'{type(user_space).__name__}.recreate(num_cells={stage.num_cells}, '
                                   'op_candidates=...) did not build the requested depth / candidates per edge. '
                                   + SPACE_REQUIREMENT + '.')
            supernet = self.mutate_model(space)
        stage_evaluator = self.mutate_evaluator(self._fresh_evaluator(evaluator))
        self._mutated_model_space = RawFormatModelSpace(supernet, stage_evaluator)
        self._mutated_model_space.status = ModelStatus.Frozen
        self.engine.submit_models(self._mutated_model_space)
        if self._mutated_model_space.status != ModelStatus.Trained:
            raise RuntimeError(f'P-DARTS stage {stage.index + 1} did not finish training '
                               f'(status {self._mutated_model_space.status.value}).')
        return self.oneshot_module  # type: ignore[return-value]

    def _fresh_evaluator(self, evaluator: Lightning) -> Lightning:
        """A new evaluator with the same settings: a fresh training module and Trainer (``max_epochs`` = a stage)."""
        module = evaluator.module
        module = type(module)(*module.trace_args, **module.trace_kwargs) if is_traceable(module) \
            else copy.deepcopy(module)
        trainer = evaluator.trainer
        trainer_kwargs = {**trainer.trace_kwargs, 'max_epochs': self.epochs_per_stage}
        fit_kwargs = dict(evaluator.fit_kwargs or {})
        if fit_kwargs.pop('ckpt_path', None) is not None:
            _logger.warning('PDartsStrategy ignores the evaluator\'s ckpt_path: every stage trains a new supernet.')
        stage_dir = self._stage_dir(self._stage.index) if self._stage is not None else None
        if stage_dir is not None:  # each stage checkpoints into its own folder
            from pytorch_lightning.callbacks import ModelCheckpoint

            from ..rundir import newest_checkpoint
            trainer_kwargs['callbacks'] = [
                ModelCheckpoint(dirpath=stage_dir, save_last=True, every_n_epochs=1)
                if isinstance(cb, ModelCheckpoint) else cb for cb in trainer_kwargs.get('callbacks') or []]
            newest = newest_checkpoint(stage_dir) if self._resuming else None
            if newest is not None:
                fit_kwargs.update(ckpt_path=str(newest), weights_only=False)
                _logger.info('P-DARTS stage %d: resuming %s', self._stage.index + 1, newest)
        trainer = type(trainer)(*trainer.trace_args, **trainer_kwargs)
        if evaluator.datamodule is not None and self._datamodule_fns is not None:
            # mutate_evaluator patches these methods; restore the user's before it wraps them again
            evaluator.datamodule.train_dataloader, evaluator.datamodule.val_dataloader = self._datamodule_fns
        return Lightning(module, trainer, train_dataloaders=evaluator.train_dataloaders,
                         val_dataloaders=evaluator.val_dataloaders, datamodule=evaluator.datamodule,
                         fit_kwargs=fit_kwargs)

    def _record_stage(self, module: PDartsSearchModule, seconds: float) -> PDartsStageRecord:
        stage = module.stage
        weights, names = module.edge_weights()
        arch = module.unrestricted_export()
        try:
            genotype: Optional[Genotype] = arch_to_genotype(arch)
        except ValueError:
            genotype = None
        skips = None if genotype is None else count_skips(genotype, 'normal')
        cells = getattr(self.supernet, 'cells', None)
        if stage.skip_edges is not None:  # not a DARTS network: its `cells` also hold other blocks
            cells = None
        record = PDartsStageRecord(
            stage=stage.index + 1, num_cells=stage.num_cells, supernet_cells=len(cells) if cells is not None else None,
            num_ops=stage.num_ops, skip_dropout=stage.skip_dropout, epochs=stage.epochs,
            ops={label: list(n) for label, n in names.items()},  # as built in the trained supernet
            probs={label: dict(zip(names[label], weights[label].tolist())) for label in names},
            arch=arch, genotype=genotype, normal_skips=skips, seconds=seconds,
            skip_dropout_schedule=list(module.skip_dropout_history))
        if stage.skip_edges is not None:
            _logger.info('P-DARTS stage %d/%d done in %.1f s (%d cells, %d ops per edge): arch %s', record.stage,
                         stage.num_stages, seconds, stage.num_cells, stage.num_ops, arch)
            return record
        _logger.info('P-DARTS stage %d/%d done in %.1f s (%d cells, %d ops per edge): genotype %s, %s skip-connects '
                     'in the normal cell', record.stage, stage.num_stages, seconds, stage.num_cells, stage.num_ops,
                     genotype, skips)
        return record

    def _finish(self, module: PDartsSearchModule) -> None:
        if self.select == 'perturbation':  # DARTS-PT on the last stage's supernet (no M limit: it is by α)
            self.selection = self.perturbation_select(module)
            arch = self.selection.arch
        else:
            arch = module.export()  # none excluded, M limit on the normal cell
        self.result.arch = arch
        if module.stage.skip_edges is not None:
            _logger.info('P-DARTS final arch (at most %s skip-connects over %s): %s', self.max_skip,
                         list(module.stage.skip_edges), arch)
            return
        self.result.genotype = arch_to_genotype(arch)
        self.result.skip_genotypes = module.skip_count_genotypes()
        for k, genotype in self.result.skip_genotypes:
            _logger.info('P-DARTS genotype with %d skip-connect(s) in the normal cell: %s', k, genotype)
        _logger.info('P-DARTS final genotype (at most %s skip-connects in the normal cell): %s', self.max_skip,
                     self.result.genotype)

    def load_state_dict(self, state_dict: dict) -> None:
        """``{'run_dir': out}`` resumes the search written there (:attr:`run_dir`): finished stages are read from
        their stage files, the running stage continues from the newest checkpoint of its
        ``checkpoints/stage<n>/``. A plain
        ``ckpt_path`` cannot resume P-DARTS (each stage builds a new supernet): the search starts at stage 1."""
        if state_dict.get('run_dir'):
            self.run_dir = Path(state_dict['run_dir'])
            self._resuming = True
        elif state_dict.get('ckpt_path'):
            _logger.warning('PDartsStrategy cannot resume from %s: the search starts again at stage 1 (pass '
                            "{'run_dir': <the search's out folder>}).", state_dict['ckpt_path'])

    # --- results ------------------------------------------------------------------------------------------------------
    @property
    def final_space(self) -> Any:
        """The user's space at the last stage's depth (its own candidates): the full-depth space of the search's
        evaluation, on which the exported arch freezes (as on the user's space at its own depth)."""
        if self._final_space is None:
            space = self.model_space.model_space
            self._final_space = space if self.cells is None else space.recreate(num_cells=self.cells[-1])
        return self._final_space

    @property
    def result_extra(self) -> Dict[str, Any]:
        """JSON-friendly P-DARTS results for a search summary."""
        result = self.result.to_dict()
        stages = [{k: v for k, v in stage.items() if k != 'probs'} for stage in result['stages']]
        return {**super().result_extra, 'pdarts': {'stages': stages, 'max_skip': result['max_skip'],
                                                   'skip_genotypes': result['skip_genotypes']}}

    def export_arch(self) -> Dict[str, Any]:
        """The final arch dict (after the last stage); before that, the running stage's derivation."""
        if self.result.arch is not None:
            return dict(self.result.arch)
        if self._mutated_model_space is None:
            raise RuntimeError('PDartsStrategy needs to be run before exporting an architecture.')
        _logger.warning('The P-DARTS search has not finished: exporting the architecture of stage %d.',
                        self.oneshot_module.stage.index + 1)  # type: ignore[attr-defined]
        return self.oneshot_module.export()

    def list_models(self, sort: bool = True, limit: Optional[int] = 1) -> Iterator[RawFormatModelSpace]:
        """The searched architecture on the user's (full-depth evaluation) space; only top-1 exists."""
        if limit not in (None, 1):
            _logger.warning('One-shot strategy currently only supports exporting top-1 model, got %d. It will be '
                            'reset to 1.', limit)
        yield self.model_space.freeze(self.export_arch())
