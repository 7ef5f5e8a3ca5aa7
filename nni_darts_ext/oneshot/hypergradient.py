"""DARTS hypergradients (pure PyTorch): first order, and the unrolled second order of DARTS eq. 7-8.

DARTS (Liu, Simonyan & Yang, ICLR 2019) is the bilevel problem of its eq. 3-4,
``min_α L_val(w*(α), α)`` s.t. ``w*(α) = argmin_w L_train(w, α)``. This module holds its gradient
estimators and the helpers they share with :mod:`.implicit` (implicit gradient, TTSA), written against
plain lists of tensors so that they work on a real ``nn.Module`` without copying it.

Glossary
--------
x, α (alphas)
    Upper-level (outer, slow time-scale) variables: the architecture parameters in DARTS.
y, w (weights)
    Lower-level (inner, fast time-scale) variables: the network weights in DARTS.
f, L_val
    Upper-level objective (validation loss in DARTS).
g, L_train
    Lower-level objective (training loss in DARTS).
ξ (xi)
    Step size of the one-step "virtual" unrolling ``w' = w − ξ ∇_w L_train(w, α)`` (DARTS eq. 7).
    DARTS uses the current weight learning rate; ``ξ = 0`` is first-order DARTS.
ε (eps)
    Finite-difference radius of the Hessian-vector product, ``ε = r / ‖∇_{w'} L_val(w', α)‖₂``
    with ``r = 0.01`` (DARTS eq. 8).
HVP
    Hessian-vector product; here the mixed ``∇²_{α,w} L_train(w, α) · v``.

Conventions
-----------
* Every loss is a **zero-argument closure** that computes a scalar from the *current* values of the
  parameters (``lambda: F.cross_entropy(model(x), y)``). The functions below change parameters in
  place to evaluate the closures elsewhere and always restore them bit-exactly (from a backup copy,
  also when an exception is raised), so no copy of the model is ever made.
* Parameters are passed as sequences of tensors (typically ``nn.Parameter``) that require grad.
* Results are returned as lists of detached tensors, one per input tensor; nothing is written to
  ``.grad``. A parameter that does not influence a loss gets a zero gradient.
* Forward passes run in whatever mode the caller's model is in: in training mode batch-norm running
  statistics are updated by every closure call, as in the DARTS reference code.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable, Iterator, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "first_order_hypergradient",
    "virtual_step",
    "unrolled_hypergradient",
    "LossClosure",
    "AllReduce",
    "TensorOrSeq",
]

LossClosure = Callable[[], Tensor]
#: averages a list of tensors over the data-parallel ranks in place and returns it (see ``oneshot.distributed``)
AllReduce = Callable[[list], list]
TensorOrSeq = Union[Tensor, Sequence[Tensor]]

_NAN_ADVICE = "lower the learning rates (weights and architecture) or check the data for NaN/inf values"
_logger = logging.getLogger(__name__)
_ZERO_DIRECTION_LOGGED = False


def _log_zero_direction() -> None:
    global _ZERO_DIRECTION_LOGGED
    _ZERO_DIRECTION_LOGGED = True
    _logger.warning("unrolled_hypergradient: ‖∇_w' L_val(w', α)‖ = 0 on a batch (the validation loss does not "
                    "depend on the weights there): its hypergradient is ∇_α L_val(w', α) (logged once)")


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

def _as_list(tensors: TensorOrSeq) -> list[Tensor]:
    if isinstance(tensors, Tensor):
        return [tensors]
    return list(tensors)


def _require_grad(tensors: Sequence[Tensor], what: str) -> None:
    for i, t in enumerate(tensors):
        if not t.requires_grad:
            raise ValueError(f"{what}[{i}] does not require grad; pass tensors/nn.Parameters with requires_grad=True")


def _evaluate(closure: LossClosure, what: str) -> Tensor:
    """Call a loss closure and check that the result is a finite scalar."""
    loss = closure()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"{what} closure must return a scalar tensor, got {type(loss).__name__}")
    value = float(loss.detach())
    if not math.isfinite(value):
        raise ValueError(f"{what} is {value} (not finite); {_NAN_ADVICE}")
    return loss.reshape(())


def _grad(
    outputs: Union[Tensor, Sequence[Tensor]],
    inputs: Sequence[Tensor],
    grad_outputs: Optional[Sequence[Tensor]] = None,
    *,
    retain_graph: Optional[bool] = None,
    create_graph: bool = False,
) -> list[Tensor]:
    """``torch.autograd.grad`` that tolerates unused inputs (None → zeros) and constant outputs."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    gouts = None if grad_outputs is None else list(grad_outputs)
    keep = [i for i, o in enumerate(outs) if o is not None and o.requires_grad]
    if not keep:  # nothing depends on the inputs: the derivative is identically zero
        return [torch.zeros_like(t) for t in inputs]
    outs = [outs[i] for i in keep]
    if gouts is not None:
        gouts = [gouts[i] for i in keep]
    grads = torch.autograd.grad(
        outs, list(inputs), grad_outputs=gouts, retain_graph=retain_graph,
        create_graph=create_graph, allow_unused=True,
    )
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


@contextlib.contextmanager
def _without_autocast() -> Iterator[None]:
    """Run the enclosed passes in the parameters' own precision (float32): autocast off on every device type."""
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def _reduced(tensors: list[Tensor], all_reduce: Optional[AllReduce]) -> list[Tensor]:
    if all_reduce is None:
        return tensors
    return list(all_reduce(tensors))


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _norm(a: Sequence[Tensor]) -> float:
    return math.sqrt(sum(float((x.detach() * x.detach()).sum()) for x in a))


# ----------------------------------------------------------------------------------------------
# DARTS (eq. 3-4 of the paper: the bilevel problem; eq. 7-8: its approximate gradient)
# ----------------------------------------------------------------------------------------------

def first_order_hypergradient(alphas: Sequence[Tensor], val_loss: LossClosure, *,
                              all_reduce: Optional[AllReduce] = None) -> list[Tensor]:
    """First-order DARTS architecture gradient ``∇_α L_val(w, α)`` (ξ = 0).

    Parameters
    ----------
    alphas : sequence of Tensor
        Architecture parameters α (require grad).
    val_loss : callable
        Zero-argument closure returning the scalar validation loss at the current (w, α).
    all_reduce : callable, optional
        Data-parallel hook: averages a list of tensors over the ranks (in place) and returns it. Applied to the
        gradient before it is returned, so every rank gets the gradient of the global batch.

    Returns
    -------
    list of Tensor
        One detached gradient per α tensor (zeros for an α that the loss does not use).

    Raises
    ------
    ValueError
        If the loss is NaN or infinite.
    """
    alphas = _as_list(alphas)
    _require_grad(alphas, "alphas")
    loss = _evaluate(val_loss, "validation loss")
    return _reduced([g.detach() for g in _grad(loss, alphas)], all_reduce)


@torch.no_grad()
def virtual_step(
    weights: Sequence[Tensor],
    weight_grads: Sequence[Tensor],
    xi: float,
    momentum: float = 0.0,
    momentum_buffers: Optional[Sequence[Optional[Tensor]]] = None,
    weight_decay: float = 0.0,
) -> None:
    """Take the virtual SGD step ``w ← w − ξ (momentum·buf + g + wd·w)`` **in place**.

    This is the step of the DARTS reference ``_compute_unrolled_model`` (DARTS eq. 7 with the
    weight optimiser's momentum and weight decay): it equals the step ``torch.optim.SGD`` (no
    dampening, no Nesterov) would take next with learning rate ξ.

    Parameters
    ----------
    weights : sequence of Tensor
        Weights w, modified in place (``Tensor.sub_``); the caller keeps a backup to undo the step.
    weight_grads : sequence of Tensor
        ``∇_w L_train(w, α)``, one per weight.
    xi : float
        Virtual step size ξ.
    momentum : float, default 0.0
        Momentum coefficient of the weight optimiser.
    momentum_buffers : sequence of (Tensor or None), optional
        The optimiser's momentum buffers (``optimizer.state[p]['momentum_buffer']``). ``None`` (or a
        ``None`` entry, as before the optimiser's first step) means no momentum term.
    weight_decay : float, default 0.0
        L2 weight-decay coefficient of the weight optimiser.

    Notes
    -----
    NNI 2.x wrote ``w = w - lr * (...)``, which rebinds a local name and leaves the parameters
    untouched, so its "unrolled" DARTS was never unrolled. Here every update is an in-place
    operation on the tensors passed in, so ``model.parameters()`` really move.
    """
    weights = _as_list(weights)
    weight_grads = _as_list(weight_grads)
    if len(weight_grads) != len(weights):
        raise ValueError(f"got {len(weight_grads)} gradients for {len(weights)} weights")
    if momentum_buffers is not None and len(momentum_buffers) != len(weights):
        raise ValueError(f"got {len(momentum_buffers)} momentum buffers for {len(weights)} weights")
    for i, (w, g) in enumerate(zip(weights, weight_grads)):
        d = g.detach().clone()
        if weight_decay != 0.0:
            d.add_(w, alpha=weight_decay)
        buf = None if momentum_buffers is None else momentum_buffers[i]
        if buf is not None and momentum != 0.0:
            d.add_(buf, alpha=momentum)
        w.sub_(d, alpha=xi)  # in place: the model itself moves (guards the NNI 2.x bug)


def unrolled_hypergradient(
    weights: Sequence[Tensor],
    alphas: Sequence[Tensor],
    train_loss: LossClosure,
    val_loss: LossClosure,
    xi: float,
    *,
    momentum: float = 0.0,
    momentum_buffers: Optional[Sequence[Optional[Tensor]]] = None,
    weight_decay: float = 0.0,
    hvp: Literal["finite_difference", "exact"] = "finite_difference",
    r: float = 0.01,
    all_reduce: Optional[AllReduce] = None,
    on_zero_direction: Optional[Callable[[], None]] = None,
) -> list[Tensor]:
    """Second-order DARTS architecture gradient (DARTS eq. 7–8).

    With the virtual step ``w' = w − ξ (momentum·buf + ∇_w L_train(w, α) + wd·w)``::

        ∇_α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)

    Parameters
    ----------
    weights : sequence of Tensor
        Weights w (require grad). Modified in place during the call and restored bit-exactly.
    alphas : sequence of Tensor
        Architecture parameters α (require grad).
    train_loss, val_loss : callable
        Zero-argument closures returning the scalar training / validation loss at the current
        (w, α), each on its own (fixed) batch.
    xi : float
        Unrolling step ξ (DARTS: the current weight learning rate). ``xi == 0`` returns
        :func:`first_order_hypergradient` (one pass instead of four).
    momentum, momentum_buffers, weight_decay
        Weight-optimiser state used in the virtual step, see :func:`virtual_step`.
    hvp : {'finite_difference', 'exact'}, default 'finite_difference'
        How ``∇²_{α,w} L_train(w, α) · v`` is computed: the central difference of DARTS eq. 8,
        ``(∇_α L_train(w + εv, α) − ∇_α L_train(w − εv, α)) / (2ε)`` with ``ε = r / ‖v‖₂``, or by
        double backward, ``∇_α (∇_w L_train(w, α) · v)``, at the original w (more memory).
    r : float, default 0.01
        Finite-difference scale (DARTS: 0.01).
    all_reduce : callable, optional
        Data-parallel hook that averages a list of tensors over the ranks in place (see
        ``nni_darts_ext.oneshot.distributed``). Applied to ∇_w L_train (so every rank takes the same virtual
        step), to ∇_α and ∇_{w'} L_val (so ‖∇_{w'} L_val‖, and with it ε, is the global one) and to the
        Hessian-vector product: the result is the gradient of the global batch on every rank.
    on_zero_direction : callable, optional
        Called (without arguments) when ``v = ∇_{w'} L_val(w', α)`` is exactly zero: then the Hessian-vector
        product is exactly zero, the result is ``∇_α L_val(w', α)`` and the two (or one) passes of the product are
        skipped. Without it, such a step is logged once per process.

    Returns
    -------
    list of Tensor
        One detached gradient per α tensor.

    Raises
    ------
    ValueError
        If a loss is NaN or infinite, or if ``‖∇_{w'} L_val(w', α)‖`` is not finite. (Zero is no
        error: with ``v = 0`` the product ``∇²_{α,w} L_train · v`` is exactly 0, although the
        finite-difference radius ε = r/‖v‖ is undefined; see ``on_zero_direction``.)

    Notes
    -----
    Cost: four forward/backward passes (train for the virtual step, validation at w', two train
    passes at w ± εv; with ``hvp='exact'`` one double-backward train pass instead of the last two).

    Mixed precision: the two finite-difference passes at w ± εv always run in float32 (autocast is
    switched off for them), because their difference, of order ε‖v‖ = 0.01, drowns in bf16
    rounding (measured: README, "Correctness checks worth knowing"; ``tests/test_precision.py``). The
    other two passes follow the caller's autocast.
    Extra memory: one copy of the weights (the backup), no copy of the model.
    """
    weights = _as_list(weights)
    alphas = _as_list(alphas)
    if hvp not in ("finite_difference", "exact"):
        raise ValueError(f"hvp must be 'finite_difference' or 'exact', got {hvp!r}")
    if xi == 0:
        return first_order_hypergradient(alphas, val_loss, all_reduce=all_reduce)
    _require_grad(weights, "weights")
    _require_grad(alphas, "alphas")

    backup = [w.detach().clone() for w in weights]

    def restore(step: float = 0.0, direction: Optional[Sequence[Tensor]] = None) -> None:
        # w ← backup (+ step·direction). Always rebuilt from the backup, never by undoing an
        # addition, so the final restoration is bit-exact.
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(weights, backup)):
                w.copy_(b)
                if direction is not None:
                    w.add_(direction[i], alpha=step)

    try:
        # (1) virtual step w → w' (DARTS eq. 7); only ∇_w is needed here.
        loss = _evaluate(train_loss, "training loss")
        grads_w = _reduced(_grad(loss, weights), all_reduce)
        del loss
        virtual_step(weights, grads_w, xi, momentum, momentum_buffers, weight_decay)
        del grads_w

        # (2) g_α = ∇_α L_val(w', α) and v = ∇_{w'} L_val(w', α) from one backward pass.
        loss = _evaluate(val_loss, "validation loss (at the unrolled weights w')")
        grads = _reduced(_grad(loss, alphas + weights), all_reduce)
        del loss
        g_alpha = [g.detach() for g in grads[: len(alphas)]]
        v = [g.detach() for g in grads[len(alphas):]]
        del grads
        v_norm = _norm(v)
        if not math.isfinite(v_norm):
            raise ValueError(f"‖∇_w' L_val(w', α)‖ is {v_norm} (not finite); {_NAN_ADVICE}")
        if v_norm == 0.0:
            # ∇²_{α,w} L_train · 0 = 0 exactly: the hypergradient is ∇_α L_val(w', α) (the radius ε = r/‖v‖ of
            # the finite difference would be undefined; the double backward would return zeros)
            if on_zero_direction is not None:
                on_zero_direction()
            elif not _ZERO_DIRECTION_LOGGED:
                _log_zero_direction()
            return [ga.detach() for ga in g_alpha]

        # (3) mixed second derivative ∇²_{α,w} L_train(w, α) · v at the ORIGINAL w (DARTS eq. 8).
        if hvp == "finite_difference":
            eps = r / v_norm
            with _without_autocast():  # the difference of two nearby gradients drowns in bf16/fp16 rounding
                restore(+eps, v)  # w⁺ = w + εv
                g_plus = _grad(_evaluate(train_loss, "training loss (at w + εv)"), alphas)
                restore(-eps, v)  # w⁻ = w − εv
                g_minus = _grad(_evaluate(train_loss, "training loss (at w − εv)"), alphas)
            # divide by 2ε (not "/ 2 * ε", the pt.darts / NNI-legacy precedence bug)
            hessian_v = [(p - m) / (2.0 * eps) for p, m in zip(g_plus, g_minus)]
        else:
            restore()
            loss = _evaluate(train_loss, "training loss")
            grads_w = _grad(loss, weights, create_graph=True)
            hessian_v = _grad(_dot(grads_w, v), alphas)  # ∇_α (∇_w L_train · v)
            del loss, grads_w
        hessian_v = _reduced([h.detach() for h in hessian_v], all_reduce)
        return [(ga - xi * h).detach() for ga, h in zip(g_alpha, hessian_v)]
    finally:
        restore()
