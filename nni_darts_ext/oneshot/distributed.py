"""Data-parallel helpers of the search (Lightning DDP inside one search; docs/distributed.md).

Under DDP every rank computes gradients on its own shard of both halves of the search split. The weights are a
DDP module's parameters, so Lightning's ``manual_backward`` all-reduces their gradients. α and β are not: NNI's
``arch_step`` / ours assigns their gradients by hand (``torch.autograd.grad``), so without help each rank would
step α with its own gradient and end with its own architecture (microsoft/nni#5013). The helpers here keep α/β out of
DDP's reducer and give :mod:`.hypergradient` an *averaging all-reduce* that it applies to every gradient that enters the
α update (first order: ∇_α L_val; second order: the virtual step's ∇_w L_train, ∇_α and ∇_w' L_val — whose global
norm sets ε — and the Hessian-vector product).

:class:`CpuSyncBatchNorm` / :class:`CpuSyncBatchNormPlugin`: ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so
``--sync-batchnorm`` on CPU (gloo) uses this batch norm, whose batch statistics are all-reduced with the
differentiable ``torch.distributed.nn.functional.all_reduce`` (same forward and gradients as one process that sees
the global batch).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
from pytorch_lightning.plugins.layer_sync import LayerSync

from ..ranks import is_rank_zero, rank, world_size  # noqa: F401 -- their home; importable here as before

__all__ = ['world_size', 'rank', 'is_rank_zero', 'all_reduce_mean', 'gradient_all_reduce', 'broadcast_int',
           'arch_parameter_names', 'CpuSyncBatchNorm', 'convert_cpu_sync_batchnorm', 'CpuSyncBatchNormPlugin']

AllReduce = Callable[[List[torch.Tensor]], List[torch.Tensor]]


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Average ``tensors`` over the ranks, in one flat all-reduce (in place; also returned). A no-op on one rank."""
    tensors = list(tensors)
    n = world_size()
    if n == 1 or not tensors:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    flat.div_(n)
    offset = 0
    for t in tensors:
        k = t.numel()
        with torch.no_grad():
            t.copy_(flat[offset:offset + k].view_as(t))
        offset += k
    return tensors


def gradient_all_reduce() -> Optional[AllReduce]:
    """:func:`all_reduce_mean` when several ranks run, else ``None`` (the hook of :mod:`.hypergradient`)."""
    return all_reduce_mean if world_size() > 1 else None


def broadcast_int(value: int, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (e.g. the seed of the replayed random masks of one α step)."""
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    torch.distributed.broadcast(t, src)
    return int(t.item())


def arch_parameter_names(module: nn.Module, params: Sequence[nn.Parameter]) -> List[str]:
    """Every fully qualified name under which ``params`` appear in ``module`` (a shared α has several), the form
    ``DistributedDataParallel`` reads from ``module._ddp_params_and_buffers_to_ignore``."""
    ids = {id(p) for p in params}
    names = []
    for module_name, sub in module.named_modules():
        for name, p in sub.named_parameters(recurse=False):
            if id(p) in ids:
                names.append(f'{module_name}.{name}' if module_name else name)
    return names


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are over the global batch of all ranks (any device, gloo too).

    Two differentiable all-reduces per call: the sum and count (→ the global mean), then the sum of squared deviations
    (→ the biased global variance, as ``F.batch_norm``). Running statistics use the unbiased variance, as PyTorch.
    One rank, eval mode, or no process group: plain ``F.batch_norm``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.full((1,), input.numel() / input.size(1), dtype=input.dtype, device=input.device)
        total = all_reduce(torch.cat([input.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = input - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                nn_ = float(n)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (nn_ / max(nn_ - 1, 1.0)), alpha=m)
        return out


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm{1,2,3}d`` in ``module`` by a :class:`CpuSyncBatchNorm` with the same state."""
    result = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        result = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                result.weight = module.weight
                result.bias = module.bias
        if module.track_running_stats:
            result.running_mean = module.running_mean
            result.running_var = module.running_var
            result.num_batches_tracked = module.num_batches_tracked
        result.train(module.training)
    for name, child in module.named_children():
        result.add_module(name, convert_cpu_sync_batchnorm(child))
    return result


class CpuSyncBatchNormPlugin(LayerSync):
    """Lightning ``LayerSync`` plugin (``Trainer(plugins=[...])``) that applies :class:`CpuSyncBatchNorm`."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_cpu_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return model
