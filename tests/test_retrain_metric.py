"""``retrain_epochs`` — a trial metric worth tuning (the derived net's held-out accuracy), and the
data-parallel Trainer arguments of the search settings."""


def test_retrain_epochs_reports_the_derived_net_on_the_architecture_half(tmp_path, monkeypatch):
    import json

    import nni_darts_ext.data as data
    from nni_darts_ext.search import SearchSettings, run_search
    from nni_darts_ext.trial import final_result

    def no_test_set(*args, **kwargs):
        raise AssertionError('the test set must never be used to pick an architecture')
    monkeypatch.setattr(data.datamodule, 'test_set', no_test_set)  # DartsDataModule's test loader reads it
    settings = SearchSettings(strategy='darts', preset='tiny', dataset='digits', width=4, cells=3, subset=128,
                              batch_size=16, epochs=1, warmup_epochs=0, limit_train_batches=2, progress_bar=False,
                              out=str(tmp_path / 'search'), retrain_epochs=1)
    result = run_search(settings)
    retrain = json.loads((tmp_path / 'search' / 'summary.json').read_text())['retrain']
    assert retrain['epochs'] == 1 and 0.0 <= retrain['val_acc'] <= 1.0
    assert (tmp_path / 'search' / 'retrain' / 'summary.json').is_file()
    final = final_result(result)
    assert final['default'] == final['retrain_val_acc'] == retrain['val_acc']
    assert final['supernet_val_acc'] == result.val_acc
    assert 'derived net retrained 1 epochs' in result.headline()


def test_distributed_trainer_kwargs_use_lightning_names():
    from nni_darts_ext.cli import build_parser
    from nni_darts_ext.oneshot.distributed import CpuSyncBatchNormPlugin
    from nni_darts_ext.search import SearchSettings, distributed_trainer_kwargs

    args = build_parser().parse_args(['search', '--accelerator', 'cpu', '--devices', '2', '--num-nodes', '1',
                                      '--strategy-backend', 'ddp_spawn', '--sync-batchnorm', '--retrain-epochs', '2'])
    from nni_darts_ext.accel import trainer_kwargs
    from nni_darts_ext.cli import search_settings
    settings, _ = search_settings(args)
    assert settings.retrain_epochs == 2
    kwargs = distributed_trainer_kwargs(settings)
    devices = trainer_kwargs(settings.accelerator, settings.devices, settings.precision)
    assert devices['accelerator'] == 'cpu' and devices['devices'] == 2 and kwargs['strategy'] == 'ddp_spawn'
    assert [type(p) for p in kwargs['plugins']] == [CpuSyncBatchNormPlugin] and 'sync_batchnorm' not in kwargs
    assert distributed_trainer_kwargs(SearchSettings()) == {}  # unchanged single-process default


def test_cpu_sync_batchnorm_is_plain_batchnorm_on_one_process():
    import torch
    from nni_darts_ext.oneshot.distributed import CpuSyncBatchNorm, convert_cpu_sync_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, affine=False))
    x = torch.randn(8, 1, 6, 6)
    expected = net(x)
    converted = convert_cpu_sync_batchnorm(net)
    assert isinstance(converted[1], CpuSyncBatchNorm)
    assert torch.equal(converted(x), expected)
