"""One tiny real search shared by test_callbacks.py and test_retrain.py (run once per pytest process)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

_CACHE: Dict[str, Any] = {}


def tiny_search(tmp_path_factory: Any, strategy: str = 'darts') -> Any:
    """``SearchResult`` of a one-batch DARTS search on 64 digits (C=4, 3 cells); outputs in a pytest temp folder."""
    if strategy not in _CACHE:
        import torch

        from nni_darts_ext.search import SearchSettings, run_search
        out: Path = tmp_path_factory.mktemp(f'search_{strategy}')
        settings = SearchSettings(strategy=strategy, preset='tiny', subset=64, width=4, cells=3,
                                  limit_train_batches=1, out=str(out), progress_bar=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and much faster on a loaded machine
        try:
            _CACHE[strategy] = run_search(settings)
        finally:
            torch.set_num_threads(threads)
    return _CACHE[strategy]
