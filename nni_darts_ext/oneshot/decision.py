"""How decided a search is: pure functions of the final softmax(α) (README, "Search quality").

A search whose α stayed near uniform exports a cell chosen by noise. Per cell type these numbers say how far the
architecture weights moved: the mean over edges of the largest probability (uniform: 1/#ops), the mean entropy
normalised to [0, 1] (uniform: 1), and per edge the margin of the exported op over the runner-up (both without
``none``, which DARTS never exports).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

__all__ = ['DECISIVE_FACTOR', 'DECIDED_FRACTION', 'AT_CHANCE_FACTOR', 'at_chance', 'decision_summary',
           'describe_decision', 'edge_products']

#: A supernet whose validation accuracy is below this multiple of chance (1 / classes) has learnt nothing usable:
#: 1.25 x 0.1 = 0.125 with 10 classes.
AT_CHANCE_FACTOR = 1.25


def at_chance(val_acc: Optional[float], num_classes: Optional[int]) -> bool:
    """Whether a supernet validation accuracy is at chance level (below :data:`AT_CHANCE_FACTOR` / classes)."""
    return val_acc is not None and bool(num_classes) and val_acc < AT_CHANCE_FACTOR / num_classes

# "Decided": the mean max probability is at least twice uniform with the 8 DARTS ops (0.25), i.e. 1/7 of the way from
# uniform (1/n) to one-hot (1). The same fraction applies to other op counts: with P-DARTS' 3 final ops twice uniform
# (0.67) would ask a top op to hold 2/3 of the mass, while 1/7 of the way is 0.43.
DECISIVE_FACTOR = 2.0
DECIDED_FRACTION = (DECISIVE_FACTOR / 8 - 1 / 8) / (1 - 1 / 8)


def _cell_of(label: str) -> str:
    return label.split('/', 1)[0] if '/' in label else 'all'


def decision_summary(probs: Mapping[str, Mapping[Any, float]]) -> Dict[str, Dict[str, Any]]:
    """Per cell type (the label's first component): ``mean_max_prob``, ``uniform_prob``, ``max_prob_vs_uniform``,
    ``fraction_to_one_hot`` ((mean max - uniform) / (1 - uniform)), ``mean_normalized_entropy``, ``decided``
    (fraction_to_one_hot >= :data:`DECIDED_FRACTION`, = twice uniform with 8 ops), ``edges`` and
    ``margins`` ({label: {chosen, runner_up, margin}}). Edge-weight labels (``.../inputs``, PC-DARTS β) are skipped."""
    cells: Dict[str, Dict[str, Any]] = {}
    for label, dist in probs.items():
        if label.endswith('/inputs') or len(dist) < 2:
            continue
        values = {str(k): float(v) for k, v in dist.items()}
        n = len(values)
        entropy = -sum(p * math.log(p) for p in values.values() if p > 0) / math.log(n)
        ranked = sorted((p, op) for op, p in values.items() if op != 'none')[::-1]
        cell = cells.setdefault(_cell_of(label), {'max': [], 'entropy': [], 'uniform': [], 'margins': {}})
        cell['max'].append(max(values.values()))
        cell['entropy'].append(entropy)
        cell['uniform'].append(1.0 / n)
        if ranked:
            runner_up = ranked[1] if len(ranked) > 1 else (0.0, None)
            cell['margins'][label] = {'chosen': ranked[0][1], 'runner_up': runner_up[1],
                                      'margin': ranked[0][0] - runner_up[0]}
    summary = {}
    for name, cell in cells.items():
        k = len(cell['max'])
        mean_max, uniform = sum(cell['max']) / k, sum(cell['uniform']) / k
        summary[name] = {'edges': k, 'mean_max_prob': mean_max, 'uniform_prob': uniform,
                         'max_prob_vs_uniform': mean_max / uniform,
                         'mean_normalized_entropy': sum(cell['entropy']) / k,
                         'mean_margin': (sum(m['margin'] for m in cell['margins'].values())
                                         / max(1, len(cell['margins']))),
                         'fraction_to_one_hot': (mean_max - uniform) / (1 - uniform),
                         'decided': (mean_max - uniform) / (1 - uniform) >= DECIDED_FRACTION - 1e-12,
                         'margins': cell['margins']}
    return summary


def describe_decision(summary: Mapping[str, Mapping[str, Any]], val_acc: Optional[float] = None,
                      num_classes: Optional[int] = None) -> str:
    """One sentence per cell for the log and summary.txt; says what to change when α is near uniform, and (given
    the supernet's validation accuracy and the classes) when the supernet itself is at chance accuracy."""
    parts, undecided = [], []
    for cell, s in summary.items():
        parts.append(f"{cell} cell: mean max softmax(α) {s['mean_max_prob']:.3f} = {s['max_prob_vs_uniform']:.2f}× "
                     f"uniform ({s['fraction_to_one_hot']:.2f} of the way to one-hot), "
                     f"normalised entropy {s['mean_normalized_entropy']:.3f}, mean margin of the chosen op "
                     f"{s['mean_margin']:.3f}")
        if not s['decided']:
            undecided.append(cell)
    text = '; '.join(parts) + '.'
    if undecided:
        text += (f" α of the {', '.join(undecided)} cell(s) is close to uniform "
                 f"(below {DECISIVE_FACTOR:g}× uniform with"
                 ' 8 ops, or the same fraction of the way to one-hot):'
                 ' the export is close to random. Search longer or on more data (--epochs, --subset), raise the'
                 ' architecture learning rate (--arc-lr), or use the reference preset.')
    elif at_chance(val_acc, num_classes):
        text += (f' α is decided, but the supernet is at chance accuracy (val acc {val_acc:.4f}, chance '
                 f'{1 / num_classes:.4f}): the export is not meaningful. Search longer or on more data (--epochs, '
                 '--subset), or lower the learning rates.')
    else:
        text += ' α is decided.'
    return text


def edge_products(probs: Mapping[str, Mapping[Any, float]]) -> Dict[str, Dict[str, float]]:
    """PC-DARTS: softmax(β) of each edge times its softmax(α) ops, the strengths its export ranks (PC-DARTS §3.3);
    ``{edge label: {op: β·p}}``, empty without β."""
    products: Dict[str, Dict[str, float]] = {}
    for label, betas in probs.items():
        if not label.endswith('/inputs'):
            continue
        node = label[:-len('/inputs')]
        for index, beta in betas.items():
            edge = probs.get(f'{node}/edge{index}')
            if edge is not None:
                products[f'{node}/edge{index}'] = {str(op): float(beta) * float(p) for op, p in edge.items()}
    return products
