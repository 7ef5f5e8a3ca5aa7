"""CIFAR-10 for the reference preset: torchvision's real download path (prepare-data --download, search
--download) against a local HTTP server on 127.0.0.1 serving a generated CIFAR-10-format tarball; the offline error
names --data-dir and the download command. Only the class attributes that name the file (url, MD5s) are patched."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

from nni_darts_ext.cli import main
from nni_darts_ext.search import SearchSettings

PER_BATCH = 20  # 5 training batches of 20 images, a test batch of 20


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _cifar10_tarball() -> tuple[bytes, dict]:
    """A cifar-10-python.tar.gz in the real format (pickled dicts, uint8 rows of 3x32x32) and the MD5s to patch in."""
    rng = np.random.default_rng(0)
    files = {}
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        files[name] = pickle.dumps({'data': rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
                                    'labels': [int(x) for x in rng.integers(0, 10, PER_BATCH)],
                                    'batch_label': name})
    files['batches.meta'] = pickle.dumps({'label_names': [f'class{i}' for i in range(10)], 'num_vis': 3072})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), {name: _md5(data) for name, data in files.items()}


@pytest.fixture
def cifar10_server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving the tarball; torchvision's CIFAR10 pointed at it (url and MD5s)."""
    from torchvision.datasets import CIFAR10
    tarball, md5s = _cifar10_tarball()
    served = tmp_path / 'served'
    served.mkdir()
    (served / CIFAR10.filename).write_bytes(tarball)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            return super().do_GET()

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for key in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    monkeypatch.setattr(CIFAR10, 'url', f'http://127.0.0.1:{server.server_address[1]}/{CIFAR10.filename}')
    monkeypatch.setattr(CIFAR10, 'tgz_md5', _md5(tarball))
    monkeypatch.setattr(CIFAR10, 'train_list', [[f'data_batch_{i}', md5s[f'data_batch_{i}']] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, 'test_list', [['test_batch', md5s['test_batch']]])
    monkeypatch.setattr(CIFAR10, 'meta', {**CIFAR10.meta, 'md5': md5s['batches.meta']})
    yield requests
    server.shutdown()
    server.server_close()


def test_reference_preset_means_cifar10_unless_a_dataset_is_given():
    assert SearchSettings().resolved().dataset == 'cifar10'
    assert SearchSettings(preset='reference').resolved().dataset == 'cifar10'
    assert SearchSettings(preset='reference', dataset='fashion-mnist').resolved().dataset == 'fashion-mnist'
    assert SearchSettings(preset='cpu').resolved().dataset == 'fashion-mnist'


def test_offline_cifar10_error_names_data_dir_and_the_download_command(tmp_path, capsys):
    empty = tmp_path / 'empty'
    assert main(['search', '--preset', 'reference', '--data-dir', str(empty), '--out', str(tmp_path / 'run')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert f'python -m nni_darts_ext prepare-data cifar10 --download --data-dir {empty}' in err
    assert 'or pass --data-dir (nnictl: data_dir) naming the folder that holds cifar-10-batches-py/' in err
    assert not (tmp_path / 'run' / 'summary.json').exists()


def test_prepare_data_download_fetches_cifar10_from_the_url(tmp_path, capsys, cifar10_server):
    from nni_darts_ext.data import load_dataset
    root = tmp_path / 'data'
    assert main(['prepare-data', 'cifar10', '--download', '--data-dir', str(root)]) == 0
    fetched = list(cifar10_server)
    assert fetched and set(fetched) == {'/cifar-10-python.tar.gz'}  # torchvision fetched it from the url
    assert f'datasets cifar10 ready in {root}' in capsys.readouterr().out
    assert sorted(p.name for p in (root / 'cifar-10-batches-py').iterdir()) == sorted(
        ['batches.meta', 'test_batch'] + [f'data_batch_{i}' for i in range(1, 6)])
    train, test = load_dataset('cifar10', root=root), load_dataset('cifar10', train=False, root=root)
    assert (len(train), len(test)) == (5 * PER_BATCH, PER_BATCH) and tuple(train[0][0].shape) == (3, 32, 32)
    # a second call finds the verified files and downloads nothing
    assert main(['prepare-data', 'cifar10', '--download', '--data-dir', str(root)]) == 0
    assert cifar10_server == fetched


@pytest.mark.slow
def test_search_download_gets_cifar10_then_searches(tmp_path, cifar10_server):
    root, out = tmp_path / 'data', tmp_path / 'run'
    assert main(['search', '--preset', 'tiny', '--dataset', 'cifar10', '--download', '--data-dir', str(root),
                 '--subset', '64', '--width', '4', '--cells', '3', '--limit-train-batches', '1', '--threads', '1',
                 '--no-progress-bar', '--out', str(out)]) == 0
    assert cifar10_server and set(cifar10_server) == {'/cifar-10-python.tar.gz'}
    import json
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['dataset'] == 'cifar10' and summary['settings']['download'] is True
