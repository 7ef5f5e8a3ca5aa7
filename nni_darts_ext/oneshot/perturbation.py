"""Perturbation-based architecture selection (DARTS-PT: Wang, Cheng, Chen, Tang, Hsieh, "Rethinking Architecture
Selection in Differentiable NAS", ICLR 2021; code ruocwang/darts-pt), on any supernet of ``LayerChoice`` /
``InputChoice`` mixed modules.

The magnitude of α does not measure how much an op contributes to the supernet (the paper's §3); DARTS-PT asks the
supernet instead. After the search (Alg. 1 of the paper):

1. **Ops**, edge by edge in a random (seeded) order: for each candidate o of the edge, the supernet's validation
   accuracy with o removed from the edge's mix (its weight set to 0, the others' kept); the edge keeps the op whose
   removal hurts most, o* = argmin_o acc(supernet without o) (the paper's eq. 3 with the accuracy criterion);
   the edge is discretised (one-hot on o*), and the supernet's weights are fine-tuned for a few steps before the
   next decision.
2. **Inputs** (``InputChoice``; in a DARTS cell the node's incoming edges), node by node in a random order: the same
   test on every input (the input masked to zero); the node keeps its ``n_chosen`` inputs whose removal hurts most,
   the others are masked from then on; fine-tuning again.

``none`` is never chosen when an edge has other candidates (as in the magnitude rule); equal drops are broken by
the larger α. α is not trained during the
selection; the decisions are the table of accuracy drops (per op and per input) that :class:`SelectionResult`
keeps. Sized for our budgets: ``eval_batches`` validation batches per accuracy and ``tune_steps`` weight steps between
decisions (the paper: the whole validation set, and some epochs of tuning).
"""
from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.nn.pytorch import InputChoice
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer

from ..space.genotype import unused_edge_value
from ..space.ops import NONE_OP

__all__ = ['SELECTIONS', 'Decision', 'SelectionResult', 'PerturbationSelector']

_logger = logging.getLogger(__name__)

SELECTIONS = ('magnitude', 'perturbation')


@dataclass
class Decision:
    """One decision: an edge's op (``kind='op'``) or a node's inputs (``kind='input'``)."""

    label: str
    kind: str
    order: int                          # 0-based position among all decisions
    base_acc: float                     # supernet accuracy before the test (earlier decisions applied)
    acc_without: Dict[str, float]       # candidate (op name / input index) -> accuracy with it removed
    drop: Dict[str, float]              # base_acc - acc_without
    chosen: Any                         # op name, or the sorted list of kept input indices

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SelectionResult:
    """The arch that perturbation selection derived and its decision table (``drop``: accuracy drop per candidate)."""

    arch: Dict[str, Any]
    decisions: List[Decision] = field(default_factory=list)
    final_acc: Optional[float] = None   # the discretised supernet's accuracy at the end
    eval_batches: Optional[int] = None
    tune_steps: int = 0
    seed: int = 0

    def table(self) -> Dict[str, Dict[str, float]]:
        """``{label: {candidate: accuracy drop}}``."""
        return {d.label: dict(d.drop) for d in self.decisions}

    def to_dict(self) -> Dict[str, Any]:
        return {'method': 'perturbation', 'arch': self.arch, 'final_acc': self.final_acc,
                'eval_batches': self.eval_batches, 'tune_steps': self.tune_steps, 'seed': self.seed,
                'table': self.table(), 'decisions': [d.to_dict() for d in self.decisions]}


class _SelectedWeights(nn.Module):
    """Stands in for a mixed op's ``_softmax`` during the selection: softmax(α) with the removed candidates'
    weights set to 0, or one-hot on the decided op."""

    def __init__(self, softmax: nn.Module, state: Dict[str, Any]):
        super().__init__()
        self.softmax = softmax
        self.state = state  # {'removed': index or None, 'decided': index or None} of this label, shared

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        weights = self.softmax(alpha)
        if self.state['decided'] is not None:
            return torch.zeros_like(weights).index_fill_(-1, torch.tensor([self.state['decided']],
                                                                          device=weights.device), 1.0)
        if self.state['removed'] is not None:
            return weights.index_fill(-1, torch.tensor([self.state['removed']], device=weights.device), 0.0)
        return weights


def _is_input_module(module: nn.Module) -> bool:
    return isinstance(module, InputChoice) and isinstance(module, BaseSuperNetModule)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


class PerturbationSelector:
    """DARTS-PT selection on a trained supernet (see the module doc).

    Parameters
    ----------
    net
        The supernet (its ``LayerChoice`` / ``InputChoice`` replaced by differentiable mixed modules).
    val_batches, train_batches
        Zero-argument callables returning an iterable of ``(x, y)`` batches: the validation half (accuracies) and
        the training half (fine-tuning).
    eval_batches
        Validation batches per accuracy (None: all).
    tune_steps
        Weight steps between two decisions (0: no fine-tuning).
    optimizer
        The weight optimiser to fine-tune with (the search's); None: no fine-tuning.
    loss
        ``loss(logits, y)`` (default cross entropy).
    prepare
        Applied to every batch (e.g. channels_last); batches are moved to the supernet's device.
    gradient_clip_val
        Weight-gradient norm clip of the fine-tuning (DARTS: 5).
    seed
        Seed of the random decision order.
    base_arch
        An arch dict with every label of the space (the magnitude export); the decisions replace its values.
    """

    def __init__(self, net: nn.Module, val_batches: Callable[[], Iterable[Any]],
                 train_batches: Optional[Callable[[], Iterable[Any]]] = None, *, eval_batches: Optional[int] = 10,
                 tune_steps: int = 10, optimizer: Optional[torch.optim.Optimizer] = None,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                 prepare: Callable[[Any], Any] = lambda b: b, gradient_clip_val: Optional[float] = 5.0, seed: int = 0,
                 base_arch: Optional[Dict[str, Any]] = None):
        if eval_batches is not None and eval_batches < 1:
            raise ValueError(f'eval_batches={eval_batches} is invalid; allowed: an integer >= 1 or None (all).')
        if tune_steps < 0:
            raise ValueError(f'tune_steps={tune_steps} is invalid; allowed: an integer >= 0.')
        self.net = net
        self.val_batches, self.train_batches = val_batches, train_batches
        self.eval_batches, self.tune_steps = eval_batches, tune_steps
        self.optimizer, self.loss, self.prepare = optimizer, loss, prepare
        self.gradient_clip_val = gradient_clip_val
        self.seed = seed
        self.base_arch = dict(base_arch or {})
        self.layers: Dict[str, List[DifferentiableMixedLayer]] = {}
        self.inputs: Dict[str, List[nn.Module]] = {}
        for module in net.modules():
            if isinstance(module, DifferentiableMixedLayer):
                self.layers.setdefault(module.label, []).append(module)
            elif _is_input_module(module):
                self.inputs.setdefault(module.label, []).append(module)
        if not self.layers and not self.inputs:
            raise ValueError('Perturbation selection needs a supernet of LayerChoice / InputChoice mixed modules; '
                             'none found.')
        self._layer_state = {label: {'removed': None, 'decided': None} for label in self.layers}
        self._input_masks: Dict[str, set] = {label: set() for label in self.inputs}
        self._train_iter: Optional[Iterator[Any]] = None
        self._val_cache: Optional[List[Any]] = None

    # --- the interventions ------------------------------------------------------------------------------------------
    def _install(self) -> List[Any]:
        undo: List[Any] = []
        for label, modules in self.layers.items():
            for module in modules:
                undo.append(('softmax', module, module._softmax))
                module._softmax = _SelectedWeights(module._softmax, self._layer_state[label])
        for label, modules in self.inputs.items():
            masked = self._input_masks[label]

            def hook(module, args, masked=masked):
                if not masked:
                    return None
                inputs = list(args[0])
                for i in masked:
                    inputs[i] = torch.zeros_like(inputs[i])
                return (inputs, *args[1:])
            for module in modules:
                undo.append(('hook', module.register_forward_pre_hook(hook)))
        return undo

    @staticmethod
    def _uninstall(undo: List[Any]) -> None:
        for item in reversed(undo):
            if item[0] == 'softmax':
                item[1]._softmax = item[2]
            else:
                item[1].remove()

    # --- measurements -----------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def accuracy(self) -> float:
        """Top-1 accuracy of the supernet (as intervened) on the first ``eval_batches`` validation batches
        (evaluation mode, as the supernet's own validation)."""
        was_training = self.net.training
        self.net.eval()
        correct = total = 0
        device = self._device()
        if self._val_cache is None:  # the same batches for every accuracy (a shuffling loader would add noise)
            self._val_cache = []
            for i, batch in enumerate(self.val_batches()):
                if self.eval_batches is not None and i >= self.eval_batches:
                    break
                self._val_cache.append(_to(self.prepare(batch), device))
        try:
            for batch in self._val_cache:
                x, y = batch[:2]
                correct += int((self.net(x).argmax(-1) == y).sum())
                total += int(y.numel())
        finally:
            self.net.train(was_training)
        if total == 0:
            raise ValueError('Perturbation selection: the validation data is empty.')
        return correct / total

    def _next_train_batch(self) -> Any:
        if self._train_iter is None:
            self._train_iter = iter(self.train_batches())
        try:
            return next(self._train_iter)
        except StopIteration:
            self._train_iter = iter(self.train_batches())
            return next(self._train_iter)

    def tune(self, steps: Optional[int] = None) -> None:
        """``steps`` weight steps on the training half (α frozen) with the decisions so far applied."""
        steps = self.tune_steps if steps is None else steps
        if steps <= 0 or self.optimizer is None or self.train_batches is None:
            return
        alphas = {id(m._arch_alpha): m._arch_alpha for ms in self.layers.values() for m in ms}
        alphas.update({id(m._arch_alpha): m._arch_alpha for ms in self.inputs.values() for m in ms
                       if isinstance(getattr(m, '_arch_alpha', None), torch.Tensor)})
        frozen = [a for a in alphas.values() if a.requires_grad]
        params = [p for g in self.optimizer.param_groups for p in g['params'] if id(p) not in alphas]
        device = self._device()
        self.net.train()
        for a in frozen:
            a.requires_grad_(False)
        try:
            for _ in range(steps):
                x, y = _to(self.prepare(self._next_train_batch()), device)[:2]
                self.optimizer.zero_grad()
                self.loss(self.net(x), y).backward()
                if self.gradient_clip_val:
                    nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
                self.optimizer.step()
        finally:
            for a in frozen:
                a.requires_grad_(True)

    # --- the procedure ----------------------------------------------------------------------------------------------
    def _op_candidates(self, label: str) -> List[Tuple[int, str]]:
        names = [str(n) for n in self.layers[label][0].names]
        ops = [(i, n) for i, n in enumerate(names) if n != NONE_OP]
        return ops or list(enumerate(names))

    def decide_op(self, label: str, order: int) -> Decision:
        state = self._layer_state[label]
        base = self.accuracy()
        without: Dict[str, float] = {}
        candidates = self._op_candidates(label)
        if len(candidates) > 1:  # a single candidate is decided without a test
            for index, name in candidates:
                state['removed'] = index
                try:
                    without[name] = self.accuracy()
                finally:
                    state['removed'] = None
        drop = {name: base - acc for name, acc in without.items()}
        # the op whose removal hurts most; ties (e.g. an accuracy unchanged by every removal): the larger α, as the
        # magnitude rule would choose, then the earlier candidate
        alpha = self.layers[label][0]._arch_alpha.detach().reshape(-1).tolist()
        index, chosen = max(candidates, key=lambda c: (drop.get(c[1], 0.0), alpha[c[0]], -c[0]))
        state['decided'] = index
        return Decision(label, 'op', order, base, without, drop, chosen)

    def decide_inputs(self, label: str, order: int) -> Decision:
        module = self.inputs[label][0]
        n, k = int(module.n_candidates), int(module.n_chosen or 1)
        masked = self._input_masks[label]
        base = self.accuracy()
        without: Dict[str, float] = {}
        for i in range(n):
            masked.add(i)
            try:
                without[str(i)] = self.accuracy()
            finally:
                masked.discard(i)
        drop = {i: base - acc for i, acc in without.items()}
        ranked = sorted(range(n), key=lambda i: (-drop[str(i)], i))
        chosen = sorted(ranked[:k])
        masked.update(i for i in range(n) if i not in chosen)
        return Decision(label, 'input', order, base, without, drop, chosen)

    def run(self) -> SelectionResult:
        """Decide every edge, then every node's inputs (each group in a random order of ``seed``); returns the arch
        and the table. The supernet's modules are restored afterwards (its weights stay fine-tuned)."""
        rng = random.Random(self.seed)
        edges, nodes = sorted(self.layers), sorted(self.inputs)
        rng.shuffle(edges)
        rng.shuffle(nodes)
        decisions: List[Decision] = []
        undo = self._install()
        try:
            steps = [(label, self.decide_op, '') for label in edges] + \
                [(label, self.decide_inputs, 'inputs ') for label in nodes]
            for label, decide, what in steps:
                decisions.append(decide(label, len(decisions)))
                _logger.info('perturbation selection %d/%d: %s -> %s%s (accuracy drop %s)', len(decisions),
                             len(steps), label, what, decisions[-1].chosen,
                             {k: round(v, 4) for k, v in decisions[-1].drop.items()})
                self.tune()
            final = self.accuracy()
        finally:
            self._uninstall(undo)
        return SelectionResult(self.arch(decisions), decisions, final, self.eval_batches, self.tune_steps, self.seed)

    def arch(self, decisions: Sequence[Decision]) -> Dict[str, Any]:
        """The arch dict of the decisions (over ``base_arch``): each edge's op, each node's inputs; in a DARTS cell
        (node inputs with ``edge_labels``) the edges a node does not use carry the unused value (``none``)."""
        arch = dict(self.base_arch)
        for d in decisions:
            arch[d.label] = d.chosen
        for d in decisions:
            module = self.inputs.get(d.label, [None])[0]
            if d.kind != 'input' or not hasattr(module, 'edge_labels'):
                continue
            for i, (edge, names) in enumerate(zip(module.edge_labels, module.edge_candidates)):
                if i not in d.chosen:
                    arch[edge] = unused_edge_value(names)
        return arch
