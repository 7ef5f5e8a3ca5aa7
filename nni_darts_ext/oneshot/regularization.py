"""Two regularisers of the DARTS search against collapse, as pure functions and one context manager.

- **β-decay** (Ye et al., "β-DARTS: Beta-Decay Regularization for Differentiable Architecture Search", CVPR 2022;
  Sunshine-Ye/Beta-DARTS ``Architect.mlc_loss``): the architecture loss gains

      λ_t · L_β,   L_β = (1/N) Σ_{e=1..N} log Σ_o exp(α_{e,o})          (the Beta-Decay loss: logsumexp per edge)

  over the N edges (``LayerChoice`` mixed ops; α shared by several modules counts once). Its gradient on edge e is
  λ_t · softmax(α_e) / N: it pulls every α_{e,o} down in proportion to its weight, so no op's α runs away (the
  "decay" of β = α). λ_t rises linearly over the search as the reference's ``weights = 0 + 50 * epoch / 100``
  (λ_t = λ · e / E with epoch e = 0 .. E-1; the reference is λ = 25 at E = 50). Normalisation: the mean over *all*
  N edges of the space; the reference's DARTS-space code sums one mean per cell type (normal + reduce, 14 edges
  each), i.e. its λ is twice ours there; on NAS-Bench-201 (one α matrix) both are the same.
- **Random smoothing** (Chen & Hsieh, "Stabilizing Differentiable Architecture Search via Perturbation-based
  Regularization" (SDARTS), ICML 2020, eq. 5, SDARTS-RS): the weight step minimises L_train(w, Ā + δ) with
  δ ~ U[-ε, ε] on the *normalised* architecture weights Ā = softmax(α) (xiangning-chen/SmoothDARTS ``Random_alpha``
  after ``softmax_arch_parameters``); the perturbed weights are clipped to [0, 1] and renormalised per edge (their
  ``clip``). α itself is never changed and the α step sees no noise. ε rises linearly over the search as the
  reference's ``0.03 + (0.3 - 0.03) * epoch / epochs``, here ε_t = ε · (0.1 + 0.9 · e / E).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer

__all__ = ['edge_alphas', 'beta_decay_loss', 'beta_decay_weight', 'add_beta_decay', 'smoothing_radius',
           'perturb_weights', 'PerturbedSoftmax', 'random_smoothing']


def edge_alphas(modules: Sequence[nn.Module]) -> List[torch.Tensor]:
    """The α of every ``LayerChoice`` mixed op (DARTS, PC-DARTS, P-DARTS, NNI's), each shared α once, in order."""
    seen, alphas = set(), []
    for module in modules:
        if isinstance(module, DifferentiableMixedLayer) and id(module._arch_alpha) not in seen:
            seen.add(id(module._arch_alpha))
            alphas.append(module._arch_alpha)
    return alphas


def beta_decay_loss(alphas: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_β = mean over the edges of logsumexp(α_e) (β-DARTS' Beta-Decay loss; ``mlc_loss``)."""
    if not alphas:
        raise ValueError('β-decay needs architecture parameters of LayerChoice mixed ops; the space has none.')
    return torch.stack([torch.logsumexp(a.reshape(-1), dim=0) for a in alphas]).mean()


def beta_decay_weight(strength: float, progress: float) -> float:
    """λ_t = λ · progress, progress = e / E the fraction of the search done (reference: 50 · epoch / 100)."""
    return float(strength) * min(max(float(progress), 0.0), 1.0)


def add_beta_decay(alphas: Sequence[torch.Tensor], grads: Sequence[Optional[torch.Tensor]],
                   edges: Sequence[torch.Tensor], weight: float) -> List[Optional[torch.Tensor]]:
    """``grads`` (of ``alphas``) plus ∇ λ_t · L_β(edges) = λ_t · softmax(α_e) / N on each edge α.

    The term does not depend on the weights, so the same is added to the first- and the second-order hypergradient.
    """
    if weight == 0.0 or not edges:
        return list(grads)
    with torch.enable_grad():
        leaves = [e.detach().requires_grad_(True) for e in edges]
        extra = torch.autograd.grad(weight * beta_decay_loss(leaves), leaves)
    by_id: Dict[int, torch.Tensor] = {id(e): g for e, g in zip(edges, extra)}
    out: List[Optional[torch.Tensor]] = []
    for alpha, grad in zip(alphas, grads):
        term = by_id.get(id(alpha))
        if term is None:
            out.append(grad)
        else:
            out.append(term.to(alpha.dtype) if grad is None else grad + term.to(grad.dtype))
    return out


def smoothing_radius(epsilon: float, progress: float) -> float:
    """ε_t = ε · (0.1 + 0.9 · e / E): the SDARTS ramp 0.03 -> 0.3 (for ε = 0.3) as a fraction of ε."""
    return float(epsilon) * (0.1 + 0.9 * min(max(float(progress), 0.0), 1.0))


def perturb_weights(weights: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Ā + δ clipped to [0, 1] and renormalised along the last dimension; an all-zero row keeps its largest
    original entry (SDARTS ``clip``)."""
    out = (weights + noise).clamp(0.0, 1.0)
    total = out.sum(-1, keepdim=True)
    empty = total == 0
    if bool(empty.any()):
        fallback = torch.zeros_like(out).scatter_(-1, weights.argmax(-1, keepdim=True), 1.0)
        out = torch.where(empty, fallback, out)
        total = out.sum(-1, keepdim=True)
    return out / total


class PerturbedSoftmax(nn.Module):
    """Stands in for a mixed op's ``_softmax`` during a smoothed weight step: softmax(α) + δ, clipped (SDARTS-RS).

    ``noise`` maps ``id(α)`` to δ, so modules sharing one α see the same perturbation."""

    def __init__(self, softmax: nn.Module, noise: Dict[int, torch.Tensor]):
        super().__init__()
        self.softmax = softmax
        self.noise = noise

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        weights = self.softmax(alpha)
        delta = self.noise.get(id(alpha))
        return weights if delta is None else perturb_weights(weights, delta.to(weights.dtype))


@contextlib.contextmanager
def random_smoothing(modules: Sequence[nn.Module], epsilon: float,
                     generator: Optional[torch.Generator] = None) -> Iterator[Dict[int, torch.Tensor]]:
    """Inside: every ``LayerChoice`` mixed op of ``modules`` mixes its candidates with softmax(α) + δ,
    δ ~ U[-ε, ε] drawn once on entry per α (SDARTS-RS, eq. 5). α is not touched; the mixed ops' own softmax is
    restored on exit. Yields ``{id(α): δ}``. ``epsilon <= 0``: no change."""
    layers = [m for m in modules if isinstance(m, DifferentiableMixedLayer)]
    if epsilon <= 0 or not layers:
        yield {}
        return
    noise: Dict[int, torch.Tensor] = {}
    for alpha in edge_alphas(layers):
        draw = torch.rand(alpha.shape, generator=generator, dtype=torch.float32,
                          device=alpha.device if generator is None else 'cpu')
        noise[id(alpha)] = ((2 * draw - 1) * epsilon).to(alpha.device)
    saved = [(m, m._softmax) for m in layers]
    try:
        for module, softmax in saved:
            module._softmax = PerturbedSoftmax(softmax, noise)
        yield noise
    finally:
        for module, softmax in saved:
            module._softmax = softmax
