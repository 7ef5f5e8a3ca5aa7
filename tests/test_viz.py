"""Cell diagrams (graphviz PNG + SVG, as DARTS draws them) and α/β heat maps."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from nni_darts_ext.cli import main
from nni_darts_ext.space.genotype import (DARTS_V1, DARTS_V2, PDARTS, edge_label, genotype_to_arch, inputs_label,
                                         save_arch)
from nni_darts_ext.space.ops import DARTS_OPS
from nni_darts_ext.viz import PlotError, cell_graph, plot_genotype, prob_matrix, resolve_genotype, save_heatmaps

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
SVG = '{http://www.w3.org/2000/svg}'


def svg_edges(path: Path):
    """``[(tail, head, label or None)]`` of a graphviz SVG (edge groups carry a ``tail->head`` title)."""
    root = ET.parse(path).getroot()
    edges = []
    for g in root.iter(f'{SVG}g'):
        if g.get('class') != 'edge':
            continue
        tail, head = g.find(f'{SVG}title').text.split('->')
        texts = [t.text for t in g.iter(f'{SVG}text')]
        edges.append((tail, head, texts[0] if texts else None))
    return edges


def svg_nodes(path: Path):
    root = ET.parse(path).getroot()
    return {g.find(f'{SVG}title').text for g in root.iter(f'{SVG}g') if g.get('class') == 'node'}


def test_plot_command_writes_png_and_svg_with_eight_op_edges(tmp_path, capsys):
    assert main(['plot', 'DARTS_V2', '--out', str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for cell in ('normal', 'reduce'):
        png, svg = tmp_path / f'cell_{cell}.png', tmp_path / f'cell_{cell}.svg'
        assert str(png) in printed and str(svg) in printed
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
        edges = svg_edges(svg)
        op_edges = [e for e in edges if e[2] is not None]
        assert len(op_edges) == 8
        # the ops and their inputs are those of the genotype (node names as in DARTS' visualize.py)
        names = {0: 'c_{k-2}', 1: 'c_{k-1}'}
        expected = Counter((names.get(src, str(src - 2)), str(k // 2), op)
                           for k, (op, src) in enumerate(getattr(DARTS_V2, cell)))
        assert Counter(op_edges) == expected
        # the four intermediate nodes feed the output unlabelled
        assert sorted(t for t, h, label in edges if label is None and h == 'c_{k}') == ['0', '1', '2', '3']
        assert svg_nodes(svg) == {'c_{k-2}', 'c_{k-1}', '0', '1', '2', '3', 'c_{k}'}


def test_plot_arch_file_defaults_to_its_folder(tmp_path):
    path = save_arch(genotype_to_arch(PDARTS), tmp_path / 'run' / 'arch.json')
    assert main(['plot', str(path)]) == 0
    for cell in ('normal', 'reduce'):
        edges = svg_edges(tmp_path / 'run' / f'cell_{cell}.svg')
        assert sum(label is not None for _, _, label in edges) == 8
    assert resolve_genotype(str(path)) == PDARTS


def test_plot_unknown_source_fails_cleanly(tmp_path, capsys):
    assert main(['plot', 'NOT_A_GENOTYPE', '--out', str(tmp_path)]) == 2
    assert 'neither an arch file nor a published genotype' in capsys.readouterr().err


def test_graph_source_is_left_to_right():
    source = cell_graph(DARTS_V1.normal, DARTS_V1.normal_concat).source
    assert 'rankdir=LR' in source
    assert sum(' -> ' in line and 'label=' in line for line in source.splitlines()) == 8


def test_missing_dot_raises_plot_error(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))  # no `dot` here
    with pytest.raises(PlotError, match='apt-get install graphviz'):
        plot_genotype(DARTS_V2, tmp_path)


def _probs(beta: bool):
    probs = {}
    for cell, ops in (('normal', DARTS_OPS), ('reduce', DARTS_OPS[1:5])):
        for node in range(2, 6):
            for src in range(node):
                probs[edge_label(cell, node, src)] = {op: 1 / len(ops) for op in ops}
            if beta:
                probs[inputs_label(cell, node)] = {src: 1 / node for src in range(node)}
    return probs


def test_heatmaps(tmp_path):
    files = save_heatmaps(_probs(beta=True), tmp_path, DARTS_V2)
    assert set(files) == {'alpha_normal', 'alpha_reduce'}
    for path in files.values():
        assert Path(path).read_bytes()[:8] == PNG_MAGIC
    edges, ops, alpha, beta = prob_matrix(_probs(beta=True), 'normal')
    assert len(edges) == 14 and ops == list(DARTS_OPS) and len(alpha) == 14 and len(beta) == 14
    assert edges[:3] == [(0, 2), (1, 2), (0, 3)] and beta[0] == pytest.approx(0.5)
    _, ops, alpha, beta = prob_matrix(_probs(beta=False), 'reduce')
    assert ops == list(DARTS_OPS[1:5]) and beta is None and not any(math.isnan(v) for row in alpha for v in row)
