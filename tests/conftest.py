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
def quiet_lightning():
    for name in ('pytorch_lightning', 'lightning', 'nni'):
        logging.getLogger(name).setLevel(logging.WARNING)
