import json

import pytest
import torch
from nni.nas.space import model_context

from nni_darts_ext import (DARTS_V1, DARTS_V2, PC_DARTS_CIFAR, PDARTS, DartsCellSpace, arch_to_genotype,
                           genotype_to_arch, load_arch, save_arch)
from nni_darts_ext.space.genotype import ArchFileError
from nni_darts_ext.space.ops import Identity, SepConv

PUBLISHED = [DARTS_V1, DARTS_V2, PDARTS, PC_DARTS_CIFAR]


@pytest.mark.parametrize('shape', [(1, 28), (3, 32)])
def test_space_forward_backward(shape):
    channels, size = shape
    space = DartsCellSpace(width=4, num_cells=3, in_channels=channels, image_size=size, num_classes=10)
    out = space(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    # an un-mutated LayerChoice runs one candidate (NNI's dry run): stem and classifier get gradients
    assert space.stem[0].weight.grad is not None and space.classifier.weight.grad is not None


def test_labels():
    space = DartsCellSpace(width=4, num_cells=5, in_channels=1, image_size=8)
    labels = space.simplify()
    assert len(labels) == 36
    for cell in ('normal', 'reduce'):
        for node in range(2, 6):
            mutable = labels[f'{cell}/node{node}/inputs']
            assert mutable.n_chosen == 2 and list(mutable.values) == list(range(node))
            for src in range(node):
                assert list(labels[f'{cell}/node{node}/edge{src}'].values) == [
                    'none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5',
                    'dil_conv_3x3', 'dil_conv_5x5']
    # all normal cells share the choices (one label set), reduction cells another
    assert len({id(c) for c in space.cells}) == 5


def test_op_candidates_per_cell_and_edge():
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8, op_candidates={
        'normal': ['skip_connect', 'sep_conv_3x3'], 'reduce/node3/edge1': ['none', 'max_pool_3x3', 'avg_pool_3x3']})
    labels = space.simplify()
    assert list(labels['normal/node4/edge2'].values) == ['skip_connect', 'sep_conv_3x3']
    assert list(labels['reduce/node3/edge1'].values) == ['none', 'max_pool_3x3', 'avg_pool_3x3']
    assert len(labels['reduce/node3/edge0'].values) == 8


@pytest.mark.parametrize('genotype', PUBLISHED)
def test_genotype_round_trip(genotype):
    arch = genotype_to_arch(genotype)
    assert len(arch) == 36 and all(arch[f'normal/node{j}/inputs'] == sorted(arch[f'normal/node{j}/inputs'])
                                   for j in range(2, 6))
    back = arch_to_genotype(arch)
    for cell in ('normal', 'reduce'):
        original, restored = getattr(genotype, cell), getattr(back, cell)
        for k in range(0, len(original), 2):
            assert sorted(original[k:k + 2], key=lambda t: t[1]) == restored[k:k + 2]
        assert list(getattr(genotype, cell + '_concat')) == getattr(back, cell + '_concat')
    used = {(f'normal/node{k // 2 + 2}/edge{src}') for k, (_, src) in enumerate(genotype.normal)}
    assert all(arch[label] == 'none' for label in arch if label.startswith('normal/') and 'edge' in label
               and label not in used)


def test_darts_v2_parameter_count():
    with model_context(genotype_to_arch(DARTS_V2)):
        model = DartsCellSpace(width=36, num_cells=20, auxiliary=True)
    params = sum(p.numel() for name, p in model.named_parameters() if 'aux' not in name)
    assert 3.3e6 <= params <= 3.4e6
    model.train()
    model(torch.randn(2, 3, 32, 32))
    assert model.aux_logits.shape == (2, 10)


def test_fixed_model_holds_only_chosen_edges():
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)
    arch = genotype_to_arch(DARTS_V2)
    for model in (space.freeze(arch), _with_context(arch)):
        assert not any(type(m).__name__ in ('LayerChoice', 'InputChoice') for m in model.modules())
        cell = model.cells[0]
        assert sum(len(node.edges) for node in cell.nodes) == 8
        assert isinstance(cell.nodes[0].edges['0'], SepConv)
        assert isinstance(model.cells[0].nodes[2].edges['0'], Identity)  # DARTS_V2 node 4: skip_connect from 0
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(bn.affine for bn in bns)


def _with_context(arch):
    with model_context(arch):
        return DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)


def test_fixed_model_trains():
    model = DartsCellSpace(width=8, num_cells=3, in_channels=1, image_size=8).freeze(genotype_to_arch(PDARTS))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_drop_path_only_in_training():
    model = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8, drop_path_prob=0.5).freeze(
        genotype_to_arch(DARTS_V2))
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


@pytest.mark.parametrize('kwargs, match', [
    (dict(op_candidates=['sep_conv_3x3', 'conv_9x9']), 'op_candidates.*conv_9x9'),
    (dict(op_candidates=['sep_conv_3x3']), 'at least 2'),
    (dict(num_nodes=0), 'num_nodes'),
    (dict(image_size=4), 'image_size'),
    (dict(width=0), 'width'),
    (dict(op_candidates={'middle': ['none', 'skip_connect']}), 'op_candidates key'),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DartsCellSpace(**{'in_channels': 1, 'image_size': 8, **kwargs})


def test_arch_file_round_trip_and_errors(tmp_path):
    space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)
    arch = genotype_to_arch(DARTS_V1)
    path = save_arch(arch, tmp_path / 'a' / 'arch.json')
    assert load_arch(path, space) == arch
    bad = dict(arch)
    bad['normal/node3/edge1'] = 'conv_9x9'
    (tmp_path / 'bad.json').write_text(json.dumps(bad))
    with pytest.raises(ArchFileError, match="normal/node3/edge1.*conv_9x9"):
        load_arch(tmp_path / 'bad.json', space)
    missing = dict(arch)
    del missing['reduce/node5/inputs']
    (tmp_path / 'missing.json').write_text(json.dumps(missing))
    with pytest.raises(ArchFileError, match="misses label 'reduce/node5/inputs'"):
        load_arch(tmp_path / 'missing.json', space)
    dup = dict(arch, **{'normal/node4/inputs': [1, 1]})
    with pytest.raises(ArchFileError, match='normal/node4/inputs'):
        space.freeze(dup)
    (tmp_path / 'corrupt.json').write_text('{"normal/node2/edge0": ')
    with pytest.raises(ArchFileError, match='not valid JSON'):
        load_arch(tmp_path / 'corrupt.json', space)
    with pytest.raises(ArchFileError, match='does not exist'):
        load_arch(tmp_path / 'nope.json', space)
