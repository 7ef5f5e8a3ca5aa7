"""NNI hub interop: the arch format of ``nni.nas.hub.pytorch.DARTS`` <-> ours, through the genotype."""
import ast
import inspect
import json
import textwrap

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification
from nni.nas.hub.pytorch import DARTS as HubDarts
from torch.utils.data import DataLoader, TensorDataset

from nni_darts_ext import DARTS_V1, DARTS_V2, PDARTS, DartsCellSpace, DartsStrategy, arch_to_genotype, load_arch
from nni_darts_ext.cli import main
from nni_darts_ext.retrain import resolve_arch
from nni_darts_ext.space.genotype import (HUB_FORMAT, OUR_FORMAT, ArchFileError, arch_format, from_nni_hub_arch,
                                          genotype_to_arch, save_arch, to_nni_hub_arch)
from _helpers import TRAINER


def hub_darts_v2_arch():
    """The arch dict that ``DARTS.load_searched_model('darts-v2')`` freezes, read from NNI's source (no download)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(HubDarts.load_searched_model)))
    return next(ast.literal_eval(node.value) for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'arch')


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_hub_darts_v2_is_our_darts_v2():
    hub = hub_darts_v2_arch()
    assert len(hub) == 32 and arch_format(hub) == HUB_FORMAT
    assert arch_to_genotype(hub) == DARTS_V2
    assert to_nni_hub_arch(DARTS_V2) == hub
    assert to_nni_hub_arch(genotype_to_arch(DARTS_V2)) != hub  # ours sorts each node's inputs: same cells, other slots
    ours = from_nni_hub_arch(hub)
    assert arch_format(ours) == OUR_FORMAT and ours == genotype_to_arch(DARTS_V2)
    assert arch_to_genotype(to_nni_hub_arch(ours)) == arch_to_genotype(ours)


def test_unknown_or_mixed_format_names_both():
    for bad in ({'conv': 'x'}, {'normal/node2/inputs': [0, 1], 'normal/op_2_0': 'skip_connect'}, ['a']):
        with pytest.raises(ArchFileError, match=r'normal/node2/edge0.*normal/op_2_0'):
            arch_to_genotype(bad)
    with pytest.raises(ArchFileError, match="misses label 'normal/input_2_1'"):
        arch_to_genotype({k: v for k, v in hub_darts_v2_arch().items() if k != 'normal/input_2_1'})


@pytest.mark.parametrize('genotype', [DARTS_V1, DARTS_V2, PDARTS], ids=['v1', 'v2', 'pdarts'])
def test_frozen_hub_and_ours_have_the_same_size(genotype):
    # Same reduction positions (1/3, 2/3), stem (3C), preprocessing and op modules: identical parameter counts.
    for width, cells in ((4, 5), (8, 8)):
        hub = HubDarts(width=width, num_cells=cells).freeze(to_nni_hub_arch(genotype))
        ours = DartsCellSpace(width=width, num_cells=cells).freeze(from_nni_hub_arch(to_nni_hub_arch(genotype)))
        assert count(hub) == count(ours) > 0
        out = hub(torch.randn(2, 3, 32, 32))
        assert out.shape == ours(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_load_searched_darts_v2_size_equals_ours():
    hub = HubDarts.load_searched_model('darts-v2')  # C=36, 20 cells; pretrained=False: nothing is downloaded
    arch, genotype, _ = resolve_arch(hub_darts_v2_arch())
    assert genotype == DARTS_V2
    from nni.nas.space import model_context
    with model_context(arch):
        ours = DartsCellSpace(width=36, num_cells=20)
    assert count(hub) == count(ours) == 3_349_342  # the DARTS paper's 3.3 M


def test_load_arch_converts_to_the_space_format(tmp_path):
    hub_file = tmp_path / 'hub.json'
    hub_file.write_text(json.dumps(hub_darts_v2_arch()))
    ours_file = save_arch(genotype_to_arch(DARTS_V2), tmp_path / 'ours.json')
    ours_space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8)
    hub_space = HubDarts(width=4, num_cells=3)
    assert load_arch(hub_file, ours_space) == genotype_to_arch(DARTS_V2)
    assert arch_to_genotype(load_arch(ours_file, hub_space)) == arch_to_genotype(genotype_to_arch(DARTS_V2))
    assert arch_format(load_arch(ours_file, hub_space)) == HUB_FORMAT
    hub_space.freeze(load_arch(ours_file, hub_space))
    assert load_arch(hub_file, format=OUR_FORMAT) == genotype_to_arch(DARTS_V2)


@pytest.mark.slow
def test_darts_strategy_on_the_hub_space_then_plot_and_train(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 16, 16, generator=g), torch.randint(0, 10, (64,), generator=g)
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16)
    evaluator = Classification(num_classes=10, train_dataloaders=train, val_dataloaders=val, max_epochs=1,
                               limit_train_batches=1, limit_val_batches=1, **TRAINER)
    from nni.nas.experiment import NasExperiment
    exp = NasExperiment(HubDarts(width=4, num_cells=3), evaluator, DartsStrategy())
    try:
        exp.run()
        arch = exp.export_top_models(formatter='dict')[0]
    finally:
        exp.stop()
    assert arch_format(arch) == HUB_FORMAT and len(arch) == 32
    genotype = arch_to_genotype(arch)
    assert len(genotype.normal) == len(genotype.reduce) == 8
    path = tmp_path / 'hub_arch.json'
    path.write_text(json.dumps(arch))
    assert main(['plot', str(path), '--out', str(tmp_path / 'plots'), '--formats', 'svg']) == 0
    assert (tmp_path / 'plots' / 'cell_normal.svg').is_file()
    assert main(['train', '--arch', str(path), '--dataset', 'digits', '--preset', 'tiny', '--width', '4',
                 '--subset', '64', '--limit-train-batches', '1', '--test-subset', '32', '--out',
                 str(tmp_path / 'train'), '--no-progress-bar']) == 0
    summary = json.loads((tmp_path / 'train' / 'summary.json').read_text())
    assert summary['genotype'] == str(genotype) and arch_format(summary['arch']) == OUR_FORMAT
