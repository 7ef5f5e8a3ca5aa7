"""Retraining a found architecture from scratch: real Lightning runs on digits and 3x32x32 fake data, the DARTS
recipe's pieces (auxiliary head, drop-path ramp), the reference model's size, and resuming from the last checkpoint."""
from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from _tiny_search import tiny_search
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nni_darts_ext.cli import main
from nni_darts_ext.data import get_info
from nni_darts_ext.retrain import (RetrainConfig, RetrainModule, build_model, count_flops, count_parameters,
                                   resolve_arch, retrain)
from nni_darts_ext.space.genotype import DARTS_V1, DARTS_V2, ArchFileError, genotype_to_arch

# A few steps of a C=4, 3-cell network: seconds per run.
FAST = dict(preset='tiny', width=4, subset=64, batch_size=32, limit_train_batches=2, test_subset=64, plots=False)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: as fast as two threads, and much faster on a loaded machine
    yield
    torch.set_num_threads(threads)


def _fake_cifar(n: int, seed: int):
    from torchvision import transforms
    from torchvision.datasets import FakeData
    data = FakeData(size=n, image_size=(3, 32, 32), num_classes=10, transform=transforms.ToTensor(), random_offset=seed)
    return torch.utils.data.DataLoader(data, batch_size=16)


def test_retrain_darts_v2_on_digits(tmp_path):
    result = retrain('DARTS_V2', 'digits', tmp_path, **FAST)
    assert 0.0 <= result.test_acc <= 1.0 and math.isfinite(result.test_loss)
    assert result.epochs_done == 1 and result.global_step == 2
    model = build_model(genotype_to_arch(DARTS_V2), get_info('digits'), result.config)
    assert result.params == count_parameters(model) > 0
    assert result.params_with_auxiliary > result.params  # the auxiliary head is built but not counted
    assert result.flops == count_flops(model, (1, 8, 8)) > 0 and result.mult_adds == result.flops // 2
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['test_acc'] == result.test_acc and summary['params'] == result.params
    assert summary['genotype'] == str(DARTS_V2) and summary['dataset'] == 'digits' and summary['completed']
    line = (tmp_path / 'summary.txt').read_text()
    assert line.count('\n') == 1 and 'digits' in line and 'test acc' in line and 'params' in line
    assert (tmp_path / 'checkpoints' / 'last.ckpt').is_file()
    events = EventAccumulator(str(tmp_path / 'logs'), size_guidance={'scalars': 0})
    events.Reload()
    assert {'train_loss_step', 'train_acc_epoch', 'train_aux_loss_epoch', 'test_acc', 'drop_path_prob'} <= set(
        events.Tags()['scalars'])


def test_retrain_searched_arch_on_fake_cifar(tmp_path, tmp_path_factory):
    search = tiny_search(tmp_path_factory)
    arch, genotype, source = resolve_arch(search.out / 'arch.json')
    assert arch == search.arch and genotype == search.genotype
    result = retrain(search.out / 'arch.json', 'cifar10', tmp_path, train_loader=_fake_cifar(64, 0),
                     test_loader=_fake_cifar(32, 1000), **{**FAST, 'plots': True, 'val_every_n_epochs': 1})
    assert 0.0 <= result.test_acc <= 1.0 and result.params > 0 and result.global_step == 2
    assert result.genotype == search.genotype
    model = build_model(search.arch, get_info('cifar10'), result.config)
    assert model.stem[0].in_channels == 3 and result.params == count_parameters(model)
    assert (tmp_path / 'cell_normal.png').is_file() and str(tmp_path / 'cell_normal.png') in result.headline()
    events = EventAccumulator(str(tmp_path / 'logs'), size_guidance={'scalars': 0})
    events.Reload()
    assert len(events.Scalars('val_acc')) == 1  # the test-set curve, once per epoch as DARTS' train.py does


def test_reference_model_matches_published_size():
    # DARTS (2nd order) on CIFAR-10 at the evaluation recipe: 3.3 M parameters; ~530 M mult-adds
    model = build_model(genotype_to_arch(DARTS_V2), get_info('cifar10'), RetrainConfig())
    assert len(model.cells) == 20 and model.auxiliary_head is not None
    assert count_parameters(model) == pytest.approx(3.3e6, rel=0.03)
    assert count_flops(model, (3, 32, 32)) / 2 == pytest.approx(5.3e8, rel=0.03)


def _tiny_model(**config):
    config = RetrainConfig(**{'width': 4, 'cells': 3, **config})
    return build_model(genotype_to_arch(DARTS_V2), get_info('digits'), config), config


def test_drop_path_only_in_training():
    model, _ = _tiny_model(auxiliary_weight=0.0)
    x = torch.randn(8, 1, 8, 8)
    model.eval()
    model.set_drop_path_prob(0.0)
    reference = model(x)
    model.set_drop_path_prob(0.5)
    assert torch.equal(model(x), reference) and torch.equal(model(x), reference)  # off and deterministic in eval
    model.train()
    torch.manual_seed(1)
    first = model(x)
    assert not torch.allclose(model(x), first)  # on in training: another mask each call
    model.set_drop_path_prob(0.0)
    assert torch.allclose(model(x), model(x))


def test_auxiliary_head_only_adds_loss_in_training():
    model, config = _tiny_model(auxiliary_weight=0.4)
    module = RetrainModule(model, config)
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    module.train()
    terms = module.objective(batch)
    assert model.aux_logits is not None and 'aux' in terms
    assert torch.allclose(terms['loss'], terms['ce'] + 0.4 * terms['aux'])
    terms['loss'].backward()
    assert model.auxiliary_head.classifier.weight.grad.abs().sum() > 0
    module.eval()
    terms = module.objective(batch)
    assert model.aux_logits is None and 'aux' not in terms and torch.equal(terms['loss'], terms['ce'])
    without, _ = _tiny_model(auxiliary_weight=0.0)
    assert without.auxiliary_head is None and count_parameters(without) == count_parameters(model)


class _StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


class _Recorder(pl.Callback):
    """Epoch, learning rate and drop-path probability seen by every training batch, and its labels."""

    def __init__(self):
        self.batches, self.labels = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]['lr']
        self.batches.append((trainer.current_epoch, lr, pl_module.model.drop_path_prob))
        self.labels.append(batch[1].tolist())


def test_resume_trains_only_the_remaining_epochs(tmp_path):
    recipe = dict(FAST, epochs=3, drop_path_prob=0.3)
    first, second = _Recorder(), _Recorder()
    stopped = retrain(DARTS_V1, 'digits', tmp_path, callbacks=[_StopAfterFirstEpoch(), first], **recipe)
    assert stopped.epochs_done == 1 and stopped.global_step == 2 and stopped.resumed_from_epoch is None
    checkpoint = torch.load(tmp_path / 'checkpoints' / 'last.ckpt', map_location='cpu', weights_only=False)
    assert checkpoint['epoch'] == 0 and checkpoint['global_step'] == 2
    assert not json.loads((tmp_path / 'summary.json').read_text())['completed']

    resumed = retrain(DARTS_V1, 'digits', tmp_path, callbacks=[second], **recipe)
    assert resumed.resumed_from_epoch == 1
    assert [b[0] for b in first.batches] == [0, 0] and [b[0] for b in second.batches] == [1, 1, 2, 2]
    assert resumed.epochs_done == 3 and resumed.global_step == 6  # same totals as one uninterrupted run
    checkpoint = torch.load(tmp_path / 'checkpoints' / 'last.ckpt', map_location='cpu', weights_only=False)
    assert checkpoint['epoch'] == 2 and checkpoint['global_step'] == 6
    # the cosine schedule and the drop-path ramp continue where they stopped: lr_e = 0.025 (1 + cos(pi e / 3)) / 2
    for epoch, lr, drop in first.batches + second.batches:
        assert lr == pytest.approx(0.025 * (1 + math.cos(math.pi * epoch / 3)) / 2)
        assert drop == pytest.approx(0.3 * epoch / 3)
    assert resumed.train_seconds_total >= stopped.train_seconds_total
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['completed'] and summary['epochs_done'] == 3
    # the resumed run sees the batches an uninterrupted run sees (the shuffling does not restart at epoch 0)
    uninterrupted = _Recorder()
    retrain(DARTS_V1, 'digits', tmp_path / 'straight', callbacks=[uninterrupted], **recipe)
    assert first.labels + second.labels == uninterrupted.labels

    with pytest.raises(ValueError, match='different architecture'):
        retrain(DARTS_V2, 'digits', tmp_path, **recipe)
    with pytest.raises(ValueError, match=r'epochs=3 \(now 5\)'):
        retrain(DARTS_V1, 'digits', tmp_path, **{**recipe, 'epochs': 5})


def test_bad_settings_fail_early(tmp_path):
    with pytest.raises(ValueError, match='Unknown retrain setting'):
        retrain('DARTS_V2', 'digits', tmp_path, preset='tiny', epoch=3)
    with pytest.raises(ValueError, match='preset'):
        retrain('DARTS_V2', 'digits', tmp_path, preset='huge')
    with pytest.raises(ArchFileError, match='misses label'):
        build_model({'normal/node2/inputs': [0, 1]}, get_info('digits'))


@pytest.mark.parametrize('arch, named', [
    ({'normal/node0/edge0': 'warp_drive'}, ["'normal/node0/edge0'", "'warp_drive'", 'numbered from 2']),
    ({'reduce/node3/edge5': 'skip_connect'}, ["'reduce/node3/edge5'", 'edges 0..n-1']),
    ({**genotype_to_arch(DARTS_V2), 'normal/node2/edge0': 'warp_drive'}, ["'normal/node2/edge0'", "'warp_drive'"]),
], ids=['node0-unknown-op', 'edge-beyond-node', 'unknown-op'])
def test_train_names_the_label_and_op_the_space_does_not_have(tmp_path, capsys, arch, named):
    path = tmp_path / 'arch.json'
    path.write_text(json.dumps(arch))
    code = main(['train', '--arch', str(path), '--dataset', 'digits', '--preset', 'tiny', '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith('error:')]
    assert code == 2 and all(piece in line for piece in named), err
    assert 'num_nodes' not in err and 'Traceback' not in err and not (tmp_path / 'o').exists()


def test_train_command(tmp_path, capsys):
    code = main(['train', '--genotype', 'DARTS_V2', '--dataset', 'digits', '--preset', 'tiny', '--width', '4',
                 '--subset', '64', '--limit-train-batches', '1', '--test-subset', '32', '--no-plots',
                 '--no-progress-bar', '--out', str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert 'retrain DARTS_V2 on digits: 1/1 epochs' in out and 'test acc' in out and 'M params' in out
    assert json.loads((tmp_path / 'summary.json').read_text())['global_step'] == 1


def test_test_accuracy_is_correct_images_over_all_images():
    """torchmetrics' micro accuracy over uneven batches (32, 32, 32, 4) equals the hand count."""
    from nni_darts_ext.data import test_dataloader
    config = RetrainConfig(width=4, cells=3, auxiliary_weight=0.0)
    module = RetrainModule(build_model(genotype_to_arch(DARTS_V2), get_info('digits'), config), config).eval()
    loader = test_dataloader('digits', batch_size=32, subset=100)
    with torch.no_grad():
        correct = sum(int((module(x).argmax(1) == y).sum()) for x, y in loader)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator='cpu')
    metrics = trainer.test(module, dataloaders=loader, verbose=False)[0]
    assert metrics['test_acc'] == pytest.approx(correct / 100, abs=1e-6)


def test_train_takes_the_search_presets_and_the_search_folders_dataset(tmp_path, caplog, capsys):
    """train's presets are search's (cpu, with small kept as its alias); an arch from a search folder is
    retrained on that search's dataset unless --dataset is given, and the log says so."""
    from nni_darts_ext.retrain import PRESETS, resolve_dataset
    from nni_darts_ext.space.genotype import save_arch
    assert set(PRESETS) == {'reference', 'cpu', 'tiny'}
    configs = {}
    for preset in ('cpu', 'small'):
        assert main(['train', '--genotype', 'DARTS_V2', '--preset', preset, '--print-config']) == 0
        configs[preset] = capsys.readouterr().out.replace('preset: small', 'preset: cpu')
    assert configs['cpu'] == configs['small'] and 'subset: 6000' in configs['cpu']
    search = tmp_path / 'search'
    search.mkdir()
    save_arch(genotype_to_arch(DARTS_V2), search / 'arch.json')
    (search / 'summary.json').write_text(json.dumps({'dataset': 'digits', 'strategy': 'darts'}))
    for source in (search, search / 'arch.json', search / 'summary.json'):
        dataset, origin = resolve_dataset(source, None, 'reference')
        assert dataset == 'digits' and origin.startswith(f'the dataset of the run in {search} (summary.json)')
    assert resolve_dataset(search, 'mnist', 'tiny') == ('mnist', 'given')
    assert resolve_dataset('DARTS_V2', None, 'tiny')[0] == 'digits'  # no search: the preset's dataset
    assert resolve_dataset('DARTS_V2', None, 'cpu')[0] == 'fashion-mnist'
    caplog.set_level('INFO', logger='nni_darts_ext')
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        result = retrain(search, None, tmp_path / 'train', **{**FAST, 'preset': 'cpu', 'cells': 3})
    # no Lightning warning about our hooks beside the data module's
    assert not [w for w in caught if 'on_after_batch_transfer' in str(w.message)], [str(w.message) for w in caught]
    assert result.dataset == 'digits'
    ours = [r.getMessage() for r in caplog.records if r.name.startswith('nni_darts_ext')]
    assert ours[0].startswith('preset cpu: about 5 min on 2 idle CPU cores'), ours[:3]  # the first line: the cost
    assert (f'dataset digits: the dataset of the run in {search} (summary.json); --dataset overrides it'
            in caplog.text)
