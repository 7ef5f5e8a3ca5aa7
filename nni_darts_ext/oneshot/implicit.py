"""Implicit-function hypergradients and TTSA for general bilevel problems (pure PyTorch).

TTSA (Hong, Wai, Wang & Yang, "A Two-Timescale Stochastic Algorithm Framework for Bilevel
Optimization: Complexity Analysis and Application to Actor-Critic", SIAM J. Optim. 2023) is a
two-timescale single-loop solver for ``min_{x ∈ X} f(x, y*(x))`` s.t. ``y*(x) = argmin_y g(x, y)``;
its upper-level step uses the implicit-function gradient
``∇̄_x f(x, y) = ∇_x f(x, y) − ∇²_xy g(x, y) [∇²_yy g(x, y)]⁻¹ ∇_y f(x, y)``.
x are the upper-level (slow time-scale) variables, y the lower-level (fast) ones; the conventions
(zero-argument loss closures, lists of tensors, detached results) are those of :mod:`.hypergradient`.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

from .hypergradient import LossClosure, TensorOrSeq, _as_list, _dot, _evaluate, _grad, _norm, _require_grad

__all__ = ["implicit_hypergradient", "box_projection", "TTSA"]


def _conjugate_gradient(
    hvp: Callable[[list[Tensor]], list[Tensor]], b: list[Tensor], iterations: int, tol: float
) -> list[Tensor]:
    """Solve ``H u = b`` for a symmetric positive-definite H given only ``u ↦ H u``."""
    u = [torch.zeros_like(t) for t in b]
    res = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rs = float(_dot(res, res))
    b_norm = math.sqrt(rs)
    if b_norm == 0.0:
        return u
    for _ in range(iterations):
        if math.sqrt(rs) <= tol * b_norm:
            break
        hp = hvp(p)
        php = float(_dot(p, hp))
        if not php > 0.0:
            raise ValueError(
                f"conjugate gradient met pᵀ ∇²_yy g p = {php} ≤ 0: the lower-level Hessian is not positive "
                "definite at this y (TTSA assumes g strongly convex in y); try method='neumann'"
            )
        step = rs / php
        for ui, ri, pi, hi in zip(u, res, p, hp):
            ui.add_(pi, alpha=step)
            ri.sub_(hi, alpha=step)
        rs_new = float(_dot(res, res))
        beta = rs_new / rs
        rs = rs_new
        for pi, ri in zip(p, res):
            pi.mul_(beta).add_(ri)
    return u


def _neumann(
    hvp: Callable[[list[Tensor]], list[Tensor]], b: list[Tensor], iterations: int, tol: float, lr: float
) -> list[Tensor]:
    """``H⁻¹ b ≈ η Σ_{k=0}^{K-1} (I − η H)^k b``; converges when 0 < η < 2 / λ_max(H)."""
    term = [t.clone() for t in b]
    total = [t.clone() for t in b]
    b_norm = _norm(b)
    for _ in range(iterations - 1):
        hv = hvp(term)
        for ti, hi in zip(term, hv):
            ti.sub_(hi, alpha=lr)
        for si, ti in zip(total, term):
            si.add_(ti)
        t_norm = _norm(term)
        if not math.isfinite(t_norm):
            raise ValueError(f"Neumann series diverged; neumann_lr={lr} must be below 2 / λ_max(∇²_yy g)")
        if t_norm <= tol * b_norm:
            break
    return [lr * s for s in total]


def implicit_hypergradient(
    x: TensorOrSeq,
    y: TensorOrSeq,
    f: LossClosure,
    g: LossClosure,
    *,
    method: Literal["cg", "neumann"] = "cg",
    iterations: int = 100,
    tol: float = 1e-10,
    neumann_lr: float = 1.0,
) -> list[Tensor]:
    """Implicit-function hypergradient ``∇̄_x f(x, y)`` (module docstring) at the current (x, y).

    ::

        ∇̄_x f(x, y) = ∇_x f(x, y) − ∇²_xy g(x, y) [∇²_yy g(x, y)]⁻¹ ∇_y f(x, y)

    which is ``∇ℓ(x)`` for ``ℓ(x) = f(x, y*(x))`` when ``y = y*(x)``. Hessian-vector products are
    taken by double backward; the Hessian is never formed.

    Parameters
    ----------
    x, y : Tensor or sequence of Tensor
        Upper- and lower-level variables (require grad).
    f, g : callable
        Zero-argument closures returning the scalar upper-level objective f and the lower-level
        objective g at the *current* values of x and y (same convention as the DARTS functions).
    method : {'cg', 'neumann'}, default 'cg'
        Inverse-Hessian-vector product by conjugate gradient (needs ``∇²_yy g`` positive definite)
        or by the truncated Neumann series ``η Σ_k (I − η ∇²_yy g)^k v``.
    iterations : int, default 100
        Maximum CG iterations / number of Neumann terms.
    tol : float, default 1e-10
        Stop when the CG residual (or the Neumann term) is below ``tol · ‖∇_y f‖``.
    neumann_lr : float, default 1.0
        η of the Neumann series; must satisfy ``0 < η < 2 / λ_max(∇²_yy g)`` (use ``1 / L_g``).

    Returns
    -------
    list of Tensor
        One detached gradient per x tensor.

    Raises
    ------
    ValueError
        On a non-finite objective, a non-positive-definite curvature in CG, or a diverging series.
    """
    x = _as_list(x)
    y = _as_list(y)
    _require_grad(x, "x")
    _require_grad(y, "y")
    if method not in ("cg", "neumann"):
        raise ValueError(f"method must be 'cg' or 'neumann', got {method!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be ≥ 1, got {iterations}")

    grads_f = _grad(_evaluate(f, "upper-level objective f"), x + y)
    fx = [t.detach() for t in grads_f[: len(x)]]
    fy = [t.detach() for t in grads_f[len(x):]]
    del grads_f

    # ∇_y g kept differentiable: every HVP below is one backward pass through this graph.
    gy = _grad(_evaluate(g, "lower-level objective g"), y, create_graph=True)

    def hvp_yy(u: list[Tensor]) -> list[Tensor]:  # ∇²_yy g · u
        return [t.detach() for t in _grad(gy, y, u, retain_graph=True)]

    if method == "cg":
        u = _conjugate_gradient(hvp_yy, fy, iterations, tol)
    else:
        u = _neumann(hvp_yy, fy, iterations, tol, neumann_lr)
    cross = _grad(gy, x, u)  # ∇²_xy g · u = ∇_x (∇_y g · u)
    return [(a - c).detach() for a, c in zip(fx, cross)]


def box_projection(
    lower: Union[float, Tensor, None] = None, upper: Union[float, Tensor, None] = None
) -> Callable[[list[Tensor]], list[Tensor]]:
    """Projection onto the box ``lower ≤ x ≤ upper`` (element-wise), for :class:`TTSA`."""

    def project(xs: list[Tensor]) -> list[Tensor]:
        return [t.clamp(min=lower, max=upper) for t in xs]

    return project


Schedule = Union[Literal["strongly_convex", "nonconvex"], Callable[[int], "tuple[float, float]"]]


class TTSA:
    """Two-timescale stochastic approximation for bilevel problems (Hong, Wai, Wang & Yang; module docstring).

    One step, from iteration k = 0, 1, ...::

        y_{k+1} = y_k − β_k ∇_y g(x_k, y_k)                       (fast time-scale)
        x_{k+1} = Proj_X(x_k − α_k ∇̄_x f(x_k, y_{k+1}))           (slow time-scale)

    with ``∇̄_x f`` from :func:`implicit_hypergradient`. x and y are updated in place.

    Parameters
    ----------
    x, y : Tensor or sequence of Tensor
        Upper- and lower-level variables (leaf tensors that require grad); x₀ should lie in X.
    f, g : callable
        Zero-argument closures of the current (x, y), as in :func:`implicit_hypergradient`.
    schedule : {'strongly_convex', 'nonconvex'} or callable, default 'strongly_convex'
        Step sizes (α_k, β_k):

        * ``'strongly_convex'``: ``α_k = c_alpha / (k + k_alpha)``,
          ``β_k = c_beta / (k + k_beta)^{2/3}`` (rate O(k^{-2/3}) for strongly convex ℓ);
        * ``'nonconvex'``: constant ``α = c_alpha · K^{-3/5}``, ``β = c_beta · K^{-2/5}`` for the
          horizon ``K = horizon`` (required);
        * a callable ``k ↦ (α_k, β_k)``.
    c_alpha, c_beta, k_alpha, k_beta : float
        Schedule constants (``k_alpha``, ``k_beta`` > 0 keep the first steps finite).
    horizon : int, optional
        Number of iterations K of the non-convex schedule.
    projection : callable, optional
        ``Proj_X``: maps the list of x tensors to a list of projected tensors of the same shapes
        (e.g. :func:`box_projection`). ``None`` means X is the whole space.
    method, iterations, tol, neumann_lr
        Passed to :func:`implicit_hypergradient`.

    Attributes
    ----------
    k : int
        Number of steps taken so far.
    """

    def __init__(
        self,
        x: TensorOrSeq,
        y: TensorOrSeq,
        f: LossClosure,
        g: LossClosure,
        *,
        schedule: Schedule = "strongly_convex",
        c_alpha: float = 1.0,
        c_beta: float = 1.0,
        k_alpha: float = 1.0,
        k_beta: float = 1.0,
        horizon: Optional[int] = None,
        projection: Optional[Callable[[list[Tensor]], Sequence[Tensor]]] = None,
        method: Literal["cg", "neumann"] = "cg",
        iterations: int = 100,
        tol: float = 1e-10,
        neumann_lr: float = 1.0,
    ) -> None:
        self._x_single = isinstance(x, Tensor)
        self._y_single = isinstance(y, Tensor)
        self.x = _as_list(x)
        self.y = _as_list(y)
        _require_grad(self.x, "x")
        _require_grad(self.y, "y")
        self.f, self.g = f, g
        if isinstance(schedule, str):
            if schedule not in ("strongly_convex", "nonconvex"):
                raise ValueError(f"schedule must be 'strongly_convex', 'nonconvex' or a callable, got {schedule!r}")
            if schedule == "nonconvex" and (horizon is None or horizon < 1):
                raise ValueError("schedule='nonconvex' needs the horizon K (horizon=...)")
            if schedule == "strongly_convex" and (k_alpha <= 0 or k_beta <= 0):
                raise ValueError("k_alpha and k_beta must be positive")
        self.schedule = schedule
        self.c_alpha, self.c_beta = c_alpha, c_beta
        self.k_alpha, self.k_beta = k_alpha, k_beta
        self.horizon = horizon
        self.projection = projection
        self._hyper_kwargs = dict(method=method, iterations=iterations, tol=tol, neumann_lr=neumann_lr)
        self.k = 0

    def step_sizes(self, k: int) -> tuple[float, float]:
        """``(α_k, β_k)``: the upper-level (slow) and lower-level (fast) step sizes."""
        if callable(self.schedule):
            a, b = self.schedule(k)
            return float(a), float(b)
        if self.schedule == "strongly_convex":
            return self.c_alpha / (k + self.k_alpha), self.c_beta / (k + self.k_beta) ** (2.0 / 3.0)
        K = float(self.horizon)  # type: ignore[arg-type]
        return self.c_alpha * K ** (-3.0 / 5.0), self.c_beta * K ** (-2.0 / 5.0)

    def _result(self) -> tuple[TensorOrSeq, TensorOrSeq]:
        x = self.x[0] if self._x_single else self.x
        y = self.y[0] if self._y_single else self.y
        return x, y

    def step(self) -> tuple[TensorOrSeq, TensorOrSeq]:
        """Take one TTSA step; return ``(x, y)`` (the same tensors, updated in place)."""
        alpha_k, beta_k = self.step_sizes(self.k)
        # fast time-scale: one gradient step of the lower level at (x_k, y_k)
        grads_y = _grad(_evaluate(self.g, "lower-level objective g"), self.y)
        with torch.no_grad():
            for t, d in zip(self.y, grads_y):
                t.sub_(d, alpha=beta_k)
        # slow time-scale: implicit gradient at (x_k, y_{k+1}), then project onto X
        h = implicit_hypergradient(self.x, self.y, self.f, self.g, **self._hyper_kwargs)  # type: ignore[arg-type]
        with torch.no_grad():
            for t, d in zip(self.x, h):
                t.sub_(d, alpha=alpha_k)
            if self.projection is not None:
                projected = list(self.projection([t.detach() for t in self.x]))
                if len(projected) != len(self.x):
                    raise ValueError("projection must return one tensor per x tensor")
                for t, p in zip(self.x, projected):
                    t.copy_(p)
        self.k += 1
        return self._result()

    def run(self, num_steps: int) -> tuple[TensorOrSeq, TensorOrSeq]:
        """Take ``num_steps`` steps; return ``(x, y)``."""
        for _ in range(num_steps):
            self.step()
        return self._result()
