import logging
import os

import pytest
import torch

os.environ.setdefault('NNI_DARTS_EXT_DATA', os.path.expanduser('~/.cache/nni_darts_ext/data'))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and far faster on a loaded machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quiet_lightning():
    for name in ('pytorch_lightning', 'lightning', 'nni'):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _stop_nas_experiments(monkeypatch):
    """Stop every NasExperiment a test creates (otherwise atexit stops them after pytest closed its log streams)."""
    from nni.nas.experiment import NasExperiment
    created = []
    original_init = NasExperiment.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(NasExperiment, '__init__', init)
    yield
    for experiment in created:
        try:
            experiment.stop()
        except Exception:  # noqa: BLE001 -- already stopped, or never started
            pass
