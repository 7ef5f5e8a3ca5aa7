"""Cost of one second-order α step: exact Hessian-vector product against DARTS' finite difference (Liu et al.,
ICLR 2019, §2.3).

Times the architecture gradient of one α step (the part that differs; the Adam update is negligible) on the real
DartsStrategy supernet of the chosen size, with the same weights, batches and momentum buffers for every
configuration:

- ``order1``: ∇_α L_val (one pass);
- ``order2_fd``: DARTS eq. 7-8, the virtual step and the central finite difference at w ± εv, ε = r / ‖v‖ (four
  passes; the baseline);
- ``order2_exact``: the same with ∇_α (∇_w L_train · v) by double backward (three passes, one of them double).

The configurations are interleaved (fd, exact, order1, fd, exact, ...) after untimed warm-up steps, and every ratio
is taken between medians of this run only (the machines are noisy: no absolute targets). Also reported: the cosine
between the two second-order hypergradients of the first timed step (their agreement on this batch, float32).

    python benchmarks/hvp_cost.py --size cpu --repeats 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ''):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {
    # the DARTS search supernet (C=16, 8 cells, batch 64, 3x32x32 random images: CIFAR-10 is not installable offline)
    'reference': dict(width=16, cells=8, batch=64, channels=3, image=32),
    # the CLI's cpu preset (C=8, 5 cells, batch 32, 1x28x28)
    'cpu': dict(width=8, cells=5, batch=32, channels=1, image=28),
    # seconds (tests)
    'tiny': dict(width=8, cells=3, batch=16, channels=1, image=8),
}
CONFIGS = ('order2_fd', 'order2_exact', 'order1')


def build(size: str, seed: int = 0, device: str = 'cpu'):
    """(supernet, weights, alphas, train_loss, val_loss, momentum buffers) of the DartsStrategy search of ``size``."""
    import torch
    import torch.nn.functional as F

    from nni_darts_ext import DartsCellSpace, DartsStrategy
    s = SIZES[size]
    torch.manual_seed(seed)
    space = DartsCellSpace(width=s['width'], num_cells=s['cells'], in_channels=s['channels'],
                           image_size=s['image'], num_classes=10)
    net = DartsStrategy().mutate_model(space).to(device).to(memory_format=torch.channels_last)
    net.train()
    alphas = [p for name, p in net.named_parameters() if '_arch_alpha' in name or 'arch' in name.split('.')[-1]]
    alpha_ids = {id(a) for a in alphas}
    weights = [p for p in net.parameters() if id(p) not in alpha_ids]
    if not alphas:  # NNI keeps α outside named_parameters in some versions: collect from the mixed ops
        from nni_darts_ext.oneshot.regularization import edge_alphas
        alphas = edge_alphas(list(net.modules()))
        alpha_ids = {id(a) for a in alphas}
        weights = [p for p in net.parameters() if id(p) not in alpha_ids]
    batches = [(torch.randn(s['batch'], s['channels'], s['image'], s['image'], device=device)
                .contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (s['batch'],), device=device))
               for _ in range(2)]
    buffers = [torch.randn_like(w) * 1e-2 for w in weights]

    def loss(batch):
        return lambda: F.cross_entropy(net(batch[0]), batch[1])
    return net, weights, alphas, loss(batches[0]), loss(batches[1]), buffers


def step(config: str, parts, r: float = 0.01):
    from nni_darts_ext.oneshot import bilevel
    _, weights, alphas, train_loss, val_loss, buffers = parts
    if config == 'order1':
        return bilevel.first_order_hypergradient(alphas, val_loss)
    return bilevel.unrolled_hypergradient(weights, alphas, train_loss, val_loss, xi=0.025, momentum=0.9,
                                          momentum_buffers=buffers, weight_decay=3e-4,
                                          hvp='exact' if config == 'order2_exact' else 'finite_difference', r=r)


def cosine(a, b) -> float:
    import torch
    x, y = torch.cat([t.reshape(-1) for t in a]), torch.cat([t.reshape(-1) for t in b])
    return float(torch.dot(x, y) / (x.norm() * y.norm()))


def run(size: str, repeats: int, warmup: int, threads: int | None = None, device: str = 'cpu') -> dict:
    import torch
    if threads:
        torch.set_num_threads(threads)
    parts = build(size, device=device)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    for _ in range(warmup):
        for config in CONFIGS:
            step(config, parts)
    times = {c: [] for c in CONFIGS}
    agreement = None
    for i in range(repeats):
        grads = {}
        for config in CONFIGS:
            sync()
            start = time.perf_counter()
            grads[config] = step(config, parts)
            sync()
            times[config].append(time.perf_counter() - start)
        if i == 0:
            agreement = cosine(grads['order2_fd'], grads['order2_exact'])
    median = {c: statistics.median(v) for c, v in times.items()}
    return {'size': size, 'device': device, 'repeats': repeats, 'threads': torch.get_num_threads(), 'seconds': times,
            'median_seconds': median,
            'ratio_exact_vs_finite_difference': median['order2_exact'] / median['order2_fd'],
            'ratio_finite_difference_vs_order1': median['order2_fd'] / median['order1'],
            'ratio_exact_vs_order1': median['order2_exact'] / median['order1'],
            'cosine_exact_vs_finite_difference': agreement}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', choices=list(SIZES), default='cpu')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--out', default=None, help='write the result as JSON here')
    args = parser.parse_args(argv)
    result = run(args.size, args.repeats, args.warmup, args.threads, args.device)
    m = result['median_seconds']
    print(f"{args.size} ({args.device}): α step (median of {args.repeats}) order 1 {m['order1']:.3f} s, "
          f"order 2 finite difference "
          f"{m['order2_fd']:.3f} s, order 2 exact {m['order2_exact']:.3f} s; exact / finite difference = "
          f"{result['ratio_exact_vs_finite_difference']:.2f}, finite difference / order 1 = "
          f"{result['ratio_finite_difference_vs_order1']:.2f}; cosine(exact, finite difference) = "
          f"{result['cosine_exact_vs_finite_difference']:.4f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
