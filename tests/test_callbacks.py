"""TensorBoard after a real (tiny) search: softmax(α) scalars and heat map images, accuracy curves, genotype text;
and β (PC-DARTS edge normalisation) through the same callback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from _tiny_search import tiny_search
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nni_darts_ext.callbacks import ArchitectureLogger, prob_scalars
from nni_darts_ext.space.genotype import DARTS_V2, edge_label, genotype_to_arch, inputs_label
from nni_darts_ext.space.ops import DARTS_OPS

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def read_events(logdir: Path) -> EventAccumulator:
    events = EventAccumulator(str(logdir), size_guidance={'scalars': 0, 'images': 0, 'tensors': 0})
    events.Reload()
    return events


def test_search_logs_alpha_images_and_curves(tmp_path_factory):
    result = tiny_search(tmp_path_factory)
    events = read_events(result.out / 'logs')
    tags = events.Tags()
    scalars = set(tags['scalars'])
    edge_labels = [label for label in result.arch if '/edge' in label]
    assert len(edge_labels) == 28  # 14 edges in each of the normal and reduction cells
    for label in edge_labels:
        values = [events.Scalars(f'alpha/{label}/{op}')[-1].value for op in DARTS_OPS]
        assert sum(values) == pytest.approx(1.0, abs=1e-4)  # a softmax per edge
    assert not any(t.startswith('beta/') for t in scalars)  # DARTS has no β
    assert not any(t.startswith('prob/') for t in scalars)  # one set of α scalars: not NNI's duplicate prob/*
    assert {'alpha/normal', 'alpha/reduce', 'alpha_final/normal', 'alpha_final/reduce'} <= set(tags['images'])
    image = events.Images('alpha_final/normal')[-1]
    assert image.encoded_image_string[:8] == PNG_MAGIC and image.width > 100 and image.height > 100
    # the search curves and the genotype of the epoch
    assert {'train_loss', 'train_acc', 'val_acc', 'val_loss'} <= scalars
    assert 0.0 <= events.Scalars('val_acc')[-1].value <= 1.0
    assert 'genotype/text_summary' in tags['tensors']


def test_search_summary_lists_pictures(tmp_path_factory):
    result = tiny_search(tmp_path_factory)
    files = json.loads((result.out / 'summary.json').read_text())['files']
    for key in ('cell_normal_png', 'cell_normal_svg', 'cell_reduce_png', 'cell_reduce_svg', 'alpha_normal',
                'alpha_reduce'):
        assert Path(files[key]).is_file(), key
    assert Path(files['alpha_normal']).read_bytes()[:8] == PNG_MAGIC
    assert Path(files['cell_reduce_svg']).read_text().lstrip().startswith('<?xml')


class _FakeSearchModule(pl.LightningModule):
    """The two methods the callback reads (export_probs/export) on top of a trivial model; α and β are fixed."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def export_probs(self):
        probs = {}
        for cell in ('normal', 'reduce'):
            for node in range(2, 6):
                for src in range(node):
                    probs[edge_label(cell, node, src)] = dict(zip(DARTS_OPS, torch.softmax(
                        torch.arange(8.0) * (src + 1) / 10, 0).tolist()))
                probs[inputs_label(cell, node)] = dict(enumerate(torch.softmax(torch.arange(float(node)), 0).tolist()))
        return probs

    def export(self):
        return genotype_to_arch(DARTS_V2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_beta_scalars_and_heatmap_files(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    callback = ArchitectureLogger(image_every_n_epochs=2, out_dir=tmp_path / 'pictures')
    trainer = pl.Trainer(max_epochs=2, logger=TensorBoardLogger(str(tmp_path), name='logs', version=''),
                         callbacks=[callback], enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(_FakeSearchModule(), data)
    events = read_events(tmp_path / 'logs')
    assert len(events.Scalars('beta/normal/node5/inputs/3')) == 2  # one point per epoch
    assert events.Scalars('beta/normal/node2/inputs/1')[-1].value == pytest.approx(torch.softmax(
        torch.tensor([0.0, 1.0]), 0)[1].item(), rel=1e-5)
    assert len([t for t in events.Tags()['scalars'] if t.startswith('beta/')]) == 2 * (2 + 3 + 4 + 5)
    assert [e.step for e in events.Images('alpha/normal')] == [1]  # every second epoch
    assert [e.step for e in events.Images('alpha_final/reduce')] == [2]
    assert set(callback.files) == {'alpha_normal', 'alpha_reduce'}
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in callback.files.values())


def test_prob_scalars_tags():
    tags = prob_scalars({'normal/node2/edge0': {'none': 0.5, 'skip_connect': 0.5}, 'normal/node2/inputs': {0: 1.0}})
    assert tags == {'alpha/normal/node2/edge0/none': 0.5, 'alpha/normal/node2/edge0/skip_connect': 0.5,
                    'beta/normal/node2/inputs/0': 1.0}
