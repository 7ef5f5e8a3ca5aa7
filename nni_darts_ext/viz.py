"""Pictures of what a search found: cell diagrams (graphviz) and softmax(α) / β heat maps (matplotlib).

Pure plotting: functions take a :class:`~nni_darts_ext.space.genotype.Genotype` or the ``{label: {choice: prob}}``
dict of ``export_probs()`` and write files or return figures; nothing here imports Lightning or touches a model.

Cell diagrams follow the DARTS code's ``cnn/visualize.py`` (quark0/darts): one ``Digraph`` per cell with
``rankdir=LR``, input nodes ``c_{k-2}`` and ``c_{k-1}``, intermediate nodes ``0 .. n-1``, one edge per genotype entry
labelled with its op, and unlabelled edges from the concatenated nodes to the output ``c_{k}``.
Deviation: PNG and SVG instead of PDF (SVG is text, so tests can count the edges; PNG shows in TensorBoard/READMEs).

Heat maps: one figure per cell type, rows are the edges ``i -> j`` (named as in the diagram), columns the candidate
ops, values softmax(α); a box marks each (edge, op) the genotype kept. With PC-DARTS' β a second panel shows
softmax(β_j)_i of every edge.

CLI: ``python -m nni_darts_ext plot ARCH.json|GENOTYPE_NAME [--out DIR]``.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ._compat import moved_names
from .space.genotype import CELL_TYPES, PUBLISHED_GENOTYPES, Genotype, arch_to_genotype, genotype_from_name, load_arch

__all__ = ['PlotError', 'cell_graph', 'plot_cell', 'plot_genotype', 'node_name', 'prob_matrix', 'heatmap_figure',
           'figure_rgb', 'save_heatmaps', 'resolve_genotype']

_logger = logging.getLogger(__name__)

_EDGE_LABEL = re.compile(r'^(normal|reduce)/node(\d+)/edge(\d+)$')
_INPUTS_LABEL = re.compile(r'^(normal|reduce)/node(\d+)/inputs$')


class PlotError(RuntimeError):
    """A picture could not be drawn (e.g. graphviz' ``dot`` is not installed)."""


def node_name(index: int) -> str:
    """Name of genotype node ``index`` in the DARTS diagrams: ``c_{k-2}``, ``c_{k-1}``, then ``0, 1, ...``."""
    return 'c_{k-2}' if index == 0 else 'c_{k-1}' if index == 1 else str(index - 2)


# --- cell diagrams ----------------------------------------------------------------------------------------------------
def cell_graph(pairs: Sequence[Tuple[str, int]], concat: Optional[Sequence[int]] = None,
               caption: Optional[str] = None) -> Any:
    """The ``graphviz.Digraph`` of one cell (DARTS ``visualize.plot``): two ``(op, input)`` pairs per node."""
    import graphviz

    if len(pairs) % 2:
        raise ValueError(f'A cell needs two (op, input) pairs per node, got {len(pairs)} entries.')
    steps = len(pairs) // 2
    g = graphviz.Digraph(
        format='png', engine='dot', edge_attr=dict(fontsize='20', fontname='times'),
        node_attr=dict(style='filled', shape='rect', align='center', fontsize='20', height='0.5', width='0.5',
                       penwidth='2', fontname='times'))
    g.attr(rankdir='LR')
    if caption:
        g.attr(label=caption, labelloc='t', fontsize='20', fontname='times')
    g.node('c_{k-2}', fillcolor='darkseagreen2')
    g.node('c_{k-1}', fillcolor='darkseagreen2')
    for i in range(steps):
        g.node(str(i), fillcolor='lightblue')
    for i in range(steps):
        for op, src in pairs[2 * i: 2 * i + 2]:
            if not 0 <= int(src) < i + 2:
                raise ValueError(f'Node {i} (genotype node {i + 2}) cannot take input {src}.')
            g.edge(node_name(int(src)), str(i), label=str(op), fillcolor='gray')
    g.node('c_{k}', fillcolor='palegoldenrod')
    for j in (concat if concat is not None else range(2, steps + 2)):
        g.edge(node_name(int(j)), 'c_{k}', fillcolor='gray')
    return g


def plot_cell(pairs: Sequence[Tuple[str, int]], path_stem: Path | str, concat: Optional[Sequence[int]] = None,
              caption: Optional[str] = None, formats: Sequence[str] = ('png', 'svg')) -> Dict[str, Path]:
    """Draw one cell to ``{path_stem}.{fmt}`` for every format; returns ``{fmt: path}``.

    Raises
    ------
    PlotError
        If graphviz' ``dot`` program is missing or fails.
    """
    import graphviz

    graph = cell_graph(pairs, concat, caption)
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        try:
            data = graph.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise PlotError('graphviz\' `dot` program is not installed; install it with `apt-get install graphviz` '
                            '(the python `graphviz` package only calls it).') from None
        except graphviz.CalledProcessError as err:
            raise PlotError(f'graphviz failed to draw {stem.name}.{fmt}: {err}') from None
        path = stem.with_name(f'{stem.name}.{fmt}')
        path.write_bytes(data)
        paths[fmt] = path
    return paths


def plot_genotype(genotype: Genotype, out_dir: Path | str, prefix: str = 'cell_',
                  formats: Sequence[str] = ('png', 'svg')) -> Dict[str, str]:
    """Draw the normal and reduction cells into ``out_dir``; returns ``{'cell_normal_png': path, ...}``.

    A cell type without nodes (a space whose cells are all reductions) is skipped.
    """
    files = {}
    for cell in CELL_TYPES:
        pairs = getattr(genotype, cell)
        if not pairs:
            continue
        concat = getattr(genotype, f'{cell}_concat')
        caption = f'{cell} cell' if cell == 'normal' else 'reduction cell'
        for fmt, path in plot_cell(pairs, Path(out_dir) / f'{prefix}{cell}', concat, caption, formats).items():
            files[f'{prefix}{cell}_{fmt}'] = str(path)
    return files


# --- α / β heat maps --------------------------------------------------------------------------------------------------
def prob_matrix(probs: Mapping[str, Mapping[Any, float]], cell: str
                ) -> Tuple[List[Tuple[int, int]], List[str], List[List[float]], Optional[List[float]]]:
    """Tabulate ``export_probs()`` for one cell type.

    Returns
    -------
    edges
        ``(input, node)`` genotype indices of every row, ordered by node then input.
    ops
        Column names: the candidate ops in first-seen order (P-DARTS edges may keep different ops; missing = NaN).
    alpha
        Row-major softmax(α) values.
    beta
        softmax(β_j)_i per row (PC-DARTS edge normalisation), or ``None`` when the probs carry no β.
    """
    rows: Dict[Tuple[int, int], Mapping[Any, float]] = {}
    betas: Dict[Tuple[int, int], float] = {}
    for label, dist in probs.items():
        m = _EDGE_LABEL.match(label)
        if m and m.group(1) == cell:
            rows[(int(m.group(3)), int(m.group(2)))] = dist
            continue
        m = _INPUTS_LABEL.match(label)
        if m and m.group(1) == cell:
            for src, p in dist.items():
                betas[(int(src), int(m.group(2)))] = float(p)
    edges = sorted(rows, key=lambda e: (e[1], e[0]))
    ops: List[str] = []
    for e in edges:
        ops.extend(op for op in rows[e] if op not in ops)
    alpha = [[float(rows[e].get(op, math.nan)) for op in ops] for e in edges]
    beta = [betas.get(e, math.nan) for e in edges] if betas else None
    return edges, ops, alpha, beta


def heatmap_figure(probs: Mapping[str, Mapping[Any, float]], cell: str, genotype: Optional[Genotype] = None,
                   title: Optional[str] = None) -> Any:
    """A matplotlib ``Figure`` (Agg canvas, no pyplot state) of softmax(α) (and β) of one cell type."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    edges, ops, alpha, beta = prob_matrix(probs, cell)
    if not edges:
        raise ValueError(f'No softmax(α) of {cell!r} edges in the probs (labels like "{cell}/node2/edge0").')
    values = np.array(alpha, dtype=float)
    # Fixed margins in inches (a layout engine costs a second per figure, and this is drawn every epoch).
    left, bottom, top, right, cell_w, cell_h, bar = 1.15, 1.15, 0.4, 0.55, 0.62, 0.3, 0.15
    width = left + cell_w * len(ops) + 0.12 + bar + right + (0.4 + 0.8 if beta is not None else 0.0)
    height = bottom + cell_h * len(edges) + top
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)

    def axes(x0: float, w: float) -> Any:
        return fig.add_axes((x0 / width, bottom / height, w / width, cell_h * len(edges) / height))

    ax = axes(left, cell_w * len(ops))
    cax = axes(left + cell_w * len(ops) + 0.12, bar)
    bx = axes(width - 0.85, 0.5) if beta is not None else None
    # Diverging colours centred at uniform (1/#ops): white = undecided, red = above, blue = below; the scale spans the
    # data's own range, so that a search that barely moved α still shows which way it moved (README, "Search quality").
    from matplotlib.colors import TwoSlopeNorm
    uniform = 1.0 / len(ops)
    spread = max(1e-4, float(np.nanmax(np.abs(values - uniform))))
    norm = TwoSlopeNorm(vcenter=uniform, vmin=max(0.0, uniform - spread), vmax=uniform + spread)
    image = ax.imshow(values, cmap='RdBu_r', norm=norm, aspect='auto')
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha='right', fontsize=8)
    ax.set_yticks(range(len(edges)), [f'{node_name(i)} → {node_name(j)}' for i, j in edges], fontsize=8)
    ax.set_title(title or f'{cell} cell: softmax(α) (white = uniform {uniform:.3f})', fontsize=10)
    for r, c in np.ndindex(values.shape):
        if not math.isnan(values[r, c]):
            ax.text(c, r, f'{values[r, c]:.3f}', ha='center', va='center', fontsize=6,
                    color='white' if abs(values[r, c] - uniform) > 0.6 * spread else 'black')
    if genotype is not None:  # entries 2k, 2k+1 of a cell belong to genotype node k + 2
        for k, (op, src) in enumerate(getattr(genotype, cell, [])):
            row = edges.index((int(src), k // 2 + 2)) if (int(src), k // 2 + 2) in edges else None
            if row is not None and op in ops:
                ax.add_patch(Rectangle((ops.index(op) - 0.5, row - 0.5), 1, 1, fill=False, edgecolor='red', lw=1.5))
    fig.colorbar(image, cax=cax)
    cax.tick_params(labelsize=7)
    if bx is not None:
        b = np.array(beta, dtype=float)[:, None]
        bx.imshow(b, cmap='magma', vmin=0.0, vmax=1.0, aspect='auto')
        bx.set_xticks([0], ['β'])
        bx.set_yticks([])
        bx.set_title('softmax(β)', fontsize=9)
        for r in range(len(edges)):
            if not math.isnan(b[r, 0]):
                bx.text(0, r, f'{b[r, 0]:.2f}', ha='center', va='center', fontsize=6,
                        color='black' if b[r, 0] > 0.6 else 'white')
    return fig


def figure_rgb(fig: Any) -> Any:
    """Render a figure once to an ``H x W x 3`` uint8 array (for TensorBoard ``add_image``)."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_heatmaps(probs: Mapping[str, Mapping[Any, float]], out_dir: Path | str, genotype: Optional[Genotype] = None,
                  prefix: str = 'alpha_') -> Dict[str, str]:
    """Write ``{prefix}{cell}.png`` per cell type that has edges in ``probs``; returns ``{'alpha_normal': path}``."""
    files = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for cell in CELL_TYPES:
        if not prob_matrix(probs, cell)[0]:
            continue
        fig = heatmap_figure(probs, cell, genotype)
        path = out / f'{prefix}{cell}.png'
        fig.savefig(path, dpi=120)
        files[f'{prefix}{cell}'] = str(path)
    return files


# --- CLI --------------------------------------------------------------------------------------------------------------
def resolve_genotype(source: str) -> Genotype:
    """A genotype from a published name (``DARTS_V2``) or an arch / search-summary JSON file."""
    if source.upper().replace('-', '_') in (*PUBLISHED_GENOTYPES, 'DARTS') and not Path(source).is_file():
        return genotype_from_name(source)
    if not Path(source).is_file():
        raise FileNotFoundError(f'{source!r} is neither an arch file nor a published genotype '
                                f'({", ".join(PUBLISHED_GENOTYPES)}).')
    return arch_to_genotype(load_arch(source))


# The ``plot`` command moved to the application package; importable here as before (deprecated).
__getattr__ = moved_names(__name__, 'nni_darts_ext.app.plot_command', ('add_arguments', 'run'))
