"""One run per output folder: the checks before a run writes anything, ``--overwrite``, atomic result files.

A *run folder* is the ``--out`` of ``search`` / ``train`` / a trial. It holds one run: the files of
:data:`RUN_FILES` (results, ``checkpoints/``, ``logs/``) and the pictures its summary lists. Other files in it (an
nnictl trial's ``trial.log``, the user's own notes) are not part of a run and are never touched.

The order of a command is: every check (:func:`check_run_folder`) -> :func:`prepare_run_folder` (``--overwrite``
deletes the old run, the folder is created) -> the run's files. So a refused command leaves nothing behind, and no
check can fail after a file was written.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

__all__ = ['RUN_FILES', 'RunFolderError', 'RunFolder', 'check_run_folder', 'prepare_run_folder', 'clear_run',
           'atomic_write_bytes', 'atomic_write_text', 'atomic_write_json', 'versions', 'AtomicCheckpointIO',
           'load_checkpoint', 'compare_settings', 'ResumeState', 'resume_point', 'newest_checkpoint']

_logger = logging.getLogger(__name__)

#: The files and folders of one run (relative to the run folder).
RUN_FILES = ('summary.json', 'summary.txt', 'arch.json', 'genotype.txt', 'checkpoints', 'logs', 'stages')
#: Picture names a run draws (``viz.plot_genotype`` / ``viz.save_heatmaps``).
_PICTURE_GLOBS = ('cell_*.png', 'cell_*.svg', 'alpha_*.png', 'beta_*.png', 'probs_*.png')


class RunFolderError(ValueError):
    """An output folder that a command cannot use as it is (another run, a file, a corrupt checkpoint)."""


PathLike = Union[str, os.PathLike]


@dataclass
class RunFolder:
    """What :func:`check_run_folder` found: the folder, whether it holds a run, and the checkpoint to resume."""

    path: Path
    has_run: bool
    resume_from: Optional[Path] = None
    overwrite: bool = False
    #: ``--resume`` of a run killed before its first checkpoint: its files are deleted and it starts again
    restart: bool = False


def run_files(out: PathLike) -> List[Path]:
    """The files / folders of a run found in ``out`` (empty: no run there)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    for pattern in _PICTURE_GLOBS:
        found.extend(sorted(out.glob(pattern)))
    found.extend(sorted(out.glob('*.tmp')))
    return found


def _names(paths: List[Path], out: Path) -> str:
    names = [p.name + ('/' if p.is_dir() else '') for p in paths]
    return ', '.join(names[:6]) + (f' and {len(names) - 6} more' if len(names) > 6 else '')


def check_run_folder(out: PathLike, *, resume: Union[bool, str] = False, overwrite: bool = False,
                     command: str = 'search') -> RunFolder:
    """Check ``out`` before anything is written; raise :class:`RunFolderError` with the remedy.

    ``resume``: ``True`` continues the run in ``out`` from its newest checkpoint (:func:`resume_point`); a run that
    stopped before its first checkpoint starts again from the beginning (``restart``: its files are deleted, nothing
    is lost); a folder without a run, or a finished run without a checkpoint, is refused.
    ``'auto'`` resumes when there is a checkpoint and refuses a run without one (``train``, nnictl trials),
    ``False`` needs a folder without a run. ``overwrite`` deletes the run in ``out`` first
    (:func:`prepare_run_folder`).
    """
    out = Path(out)
    if not _is_rank_zero():  # DDP: rank 0 checks and prepares the folder; the other ranks follow its decision
        return RunFolder(out, True, resume_point(out) if resume else None)
    if resume is True and overwrite:
        raise RunFolderError('--resume and --overwrite exclude each other: --resume continues the run in '
                             f'{out}, --overwrite deletes it.')
    if out.exists() and not out.is_dir():
        raise RunFolderError(f'--out {out} is a file, not a folder; pass the folder for the run\'s outputs.')
    found = run_files(out)
    if overwrite:
        return RunFolder(out, bool(found), None, overwrite=True)
    last = resume_point(out) if resume else None
    if resume is True:
        if last is None and found and _status(out) != 'finished':
            # killed before its first checkpoint: nothing is lost by starting again, and the user asked to continue
            return RunFolder(out, True, None, overwrite=True, restart=True)
        if last is None:
            what = ('the run finished without keeping a checkpoint' if found else 'the folder holds no run')
            raise RunFolderError(f'Nothing to resume in {out}: there is no checkpoint ({what}); pass --overwrite to '
                                 'start a new run there, or drop --resume.')
        return RunFolder(out, True, last)
    if resume == 'auto' and last is not None:
        return RunFolder(out, True, last)
    if found:
        raise RunFolderError(f'{out} holds another run ({_names(found, out)}); pass --resume to continue it '
                             f'(from its newest checkpoint), --overwrite to delete it and start a new run there, or '
                             f'another --out.')
    return RunFolder(out, False)


def _status(out: Path) -> Optional[str]:
    """The ``status`` of the run's ``summary.json`` (None: none, or unreadable)."""
    try:
        status = json.loads((out / 'summary.json').read_text()).get('status')
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def _checkpoint_position(path: Path) -> tuple:
    """``(epoch, global_step)`` a Lightning checkpoint was saved at, read from the file (tensors memory-mapped, not
    read); a corrupt file raises :class:`RunFolderError` naming it."""
    import torch
    try:
        data = torch.load(path, map_location='cpu', weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 -- an old-format file cannot be memory-mapped: load_checkpoint names a bad one
        data = load_checkpoint(path)
    if not isinstance(data, dict):
        load_checkpoint(path)  # raises: not a Lightning checkpoint
    return int(data.get('epoch', -1)), int(data.get('global_step', -1))


def newest_checkpoint(folder: PathLike) -> Optional[Path]:
    """The newest checkpoint (``*.ckpt``) in ``folder`` by the epoch and step it was saved at; ``last.ckpt`` wins a
    tie. None: no checkpoint.

    Lightning's ``ModelCheckpoint`` writes ``epoch=N-step=M.ckpt`` and then ``last.ckpt``: a run killed between the two
    has its newest state only in the epoch file (and no ``last.ckpt`` at all after its first epoch). Every file is
    complete (:class:`AtomicCheckpointIO` renames whole files into place); a corrupt one raises
    :class:`RunFolderError` naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob('*.ckpt') if p.is_file() and not p.name.startswith('.')]
    if len(found) <= 1:
        return found[0] if found else None
    return max(found, key=lambda p: (*_checkpoint_position(p), p.name == 'last.ckpt'))


def resume_point(out: PathLike) -> Optional[Path]:
    """Where a run in ``out`` continues: the newest checkpoint of ``checkpoints/`` (:func:`newest_checkpoint`); for
    P-DARTS the newest checkpoint of the newest stage's ``checkpoints/stage<n>/``, or the newest finished stage's
    ``stages/stage<n>.json``; None: nowhere."""
    out = Path(out)
    last = newest_checkpoint(out / 'checkpoints')
    if last is not None:
        return last

    def number(path: Path) -> int:
        digits = ''.join(c for c in (path.parent.name if path.suffix == '.ckpt' else path.stem) if c.isdigit())
        return int(digits or 0)
    stage_dirs = (p for p in out.glob('checkpoints/stage*') if p.is_dir())
    stage_ckpts = sorted(filter(None, map(newest_checkpoint, stage_dirs)), key=number)
    stage_files = sorted(out.glob('stages/stage*.json'), key=number)
    # a stage's record is written when it ends, after its last checkpoint: the later point of the same stage
    candidates = [(number(p), 0, p) for p in stage_ckpts] + [(number(p), 1, p) for p in stage_files]
    return max(candidates)[2] if candidates else None


def clear_run(out: PathLike) -> List[Path]:
    """Delete the run in ``out`` (:data:`RUN_FILES`, its pictures and the files its summary lists inside ``out``);
    other files stay. Returns what was deleted."""
    out = Path(out)
    doomed = run_files(out)
    try:
        listed = json.loads((out / 'summary.json').read_text()).get('files', {})
    except (OSError, ValueError, AttributeError):
        listed = {}
    for value in (listed.values() if isinstance(listed, dict) else ()):
        path = Path(str(value))
        try:
            inside = path.resolve().parent == out.resolve()
        except OSError:
            inside = False
        if inside and path.is_file() and path not in doomed:
            doomed.append(path)
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return doomed


def prepare_run_folder(folder: RunFolder) -> None:
    """After every check passed: delete the old run for ``--overwrite``, then create the folder (rank 0 only)."""
    if not _is_rank_zero():
        return
    if folder.restart:
        deleted = clear_run(folder.path)
        _logger.warning('--resume: the run in %s stopped before its first checkpoint; starting it from the beginning '
                        '(deleted %s)', folder.path, _names(deleted, folder.path))
    elif folder.overwrite and folder.has_run:
        deleted = clear_run(folder.path)
        _logger.info('--overwrite: deleted the run in %s (%s)', folder.path, _names(deleted, folder.path))
    folder.path.mkdir(parents=True, exist_ok=True)


# --- atomic files -----------------------------------------------------------------------------------------------------
def _is_rank_zero() -> bool:
    from .ranks import is_rank_zero
    return is_rank_zero()


def atomic_write_bytes(path: PathLike, data: Union[bytes, Callable[[io.BufferedWriter], None]]) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file) to a temporary file next to ``path``, flush it
    to disk, then rename it over ``path``: readers see the old file or the new one, never a part. The file gets the
    mode of any new file (0644 under the usual umask 022), unlike ``tempfile``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(json.loads(json.dumps(data, default=str)), indent=2) + '\n')


def read_jsonl(path: PathLike) -> List[Any]:
    """The records of a JSON-lines journal (one JSON value a line, appended and flushed as work finishes); a line
    that does not parse (the half-written last line of a killed process) is skipped. A missing file: ``[]``."""
    path = Path(path)
    records = []
    if path.exists():
        for line in path.read_text(encoding='utf-8').splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def versions() -> Dict[str, Optional[str]]:
    """The package versions a run records (results are only bit-identical with the same ones)."""
    from importlib import metadata
    result: Dict[str, Optional[str]] = {}
    for name, dist in (('torch', 'torch'), ('nni', 'nni'), ('pytorch_lightning', 'pytorch-lightning'),
                       ('nni_darts_ext', 'nni_darts_ext')):
        try:
            result[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            result[name] = None
    import platform
    result['python'] = platform.python_version()
    return result


# --- checkpoints ------------------------------------------------------------------------------------------------------
def _checkpoint_io_base():
    from pytorch_lightning.plugins import TorchCheckpointIO  # Lightning's default plugin
    return TorchCheckpointIO


class AtomicCheckpointIO(_checkpoint_io_base()):
    """Lightning's ``TorchCheckpointIO``, but a checkpoint is written to a temporary file and renamed into place: a
    run killed while saving keeps the previous ``last.ckpt`` loadable."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None
                        ) -> None:
        import torch
        if storage_options is not None:
            raise TypeError('AtomicCheckpointIO does not take storage_options.')
        atomic_write_bytes(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """``torch.load`` a run's checkpoint; a truncated / corrupt file raises :class:`RunFolderError` naming it."""
    import torch
    path = Path(path)
    try:
        data = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # noqa: BLE001 -- torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise RunFolderError(f'The checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is truncated '
                             f'or corrupt. Pass --overwrite to delete the run in {path.parent.parent} and start '
                             'again.') from None
    if not isinstance(data, dict) or 'state_dict' not in data:
        raise RunFolderError(f'{path} is not a Lightning checkpoint; pass --overwrite to delete the run in '
                             f'{path.parent.parent} and start again.')
    return data


def compare_settings(saved: Dict[str, Any], current: Dict[str, Any], free: tuple = ()) -> List[str]:
    """``'name=old (now new)'`` for each setting that differs (keys in ``free`` may change between runs)."""
    def norm(v: Any) -> Any:
        return json.loads(json.dumps(v, default=str))
    changed = []
    for key in sorted(set(saved) | set(current)):
        if key in free or key not in saved or key not in current:  # a setting of another package version
            continue
        old, new = norm(saved.get(key)), norm(current.get(key))
        if old != new:
            changed.append(f'{key}={old!r} (now {new!r})')
    return changed


def _resume_state_base():
    import pytorch_lightning as pl
    return pl.Callback


class ResumeState(_resume_state_base()):
    """What a checkpoint needs besides Lightning's own state to continue a run exactly: the run's settings (a resume
    with other settings is refused), the epochs of the seeded samplers (the data order continues instead of
    replaying epoch 0) and the search module's per-epoch genotype history.

    ``loaders``: data loaders or data modules (``data.DartsDataModule.samplers``) whose samplers have an ``epoch``
    counter (``data.SeededRandomSampler``).
    """

    def __init__(self, settings: Dict[str, Any], loaders: Any = ()):
        super().__init__()
        self.settings = dict(settings)
        self.loaders = [loader for loader in loaders if loader is not None]
        self._history: Optional[List[Any]] = None

    def _samplers(self) -> List[Any]:
        samplers = []
        for loader in self.loaders:
            for sampler in (*getattr(loader, 'samplers', {}).values(), getattr(loader, 'sampler', None),
                            getattr(getattr(loader, 'batch_sampler', None), 'sampler', None)):
                if sampler is not None and hasattr(sampler, 'epoch') and sampler not in samplers:
                    samplers.append(sampler)
        return samplers

    def state_dict(self) -> Dict[str, Any]:
        import torch
        module = getattr(self, '_module', None)
        return {'settings': self.settings, 'sampler_epochs': [int(s.epoch) for s in self._samplers()],
                'history': [{k: v if k == 'arch' else json.loads(json.dumps(v, default=str)) for k, v in h.items()}
                            for h in getattr(module, 'genotype_history', []) or []],
                'skip_dropout_history': list(getattr(module, 'skip_dropout_history', []) or []),
                'torch_rng_state': torch.get_rng_state()}  # P-DARTS' skip-connect dropout draws from it

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        import torch
        for sampler, epoch in zip(self._samplers(), state_dict.get('sampler_epochs', [])):
            sampler.epoch = int(epoch)
        self._history = list(state_dict.get('history', []))
        self._skip_history = list(state_dict.get('skip_dropout_history', []))
        self._rng_at_checkpoint = state_dict.get('torch_rng_state')
        if self._rng_at_checkpoint is not None:
            torch.set_rng_state(self._rng_at_checkpoint)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._module = pl_module

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._rng_at_checkpoint = None  # the fit goes on: the random state is the run's own from here

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # A fit resumed from the checkpoint of its last epoch runs no batch, but Lightning still sets up the data
        # loaders, and each DataLoader iterator draws its base seed from the global generator. The uninterrupted run
        # ends its fit with the state of that checkpoint (nothing random follows it): so does the resumed one, and
        # what comes next (P-DARTS' next stage: supernet initialisation, skip dropout) draws the same numbers.
        if getattr(self, '_rng_at_checkpoint', None) is not None:
            import torch
            torch.set_rng_state(self._rng_at_checkpoint)
        self._rng_at_checkpoint = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        history = getattr(pl_module, 'genotype_history', None)
        if self._history is not None and isinstance(history, list):
            history[:] = self._history  # P-DARTS: the list the stages share, up to the checkpoint
        skips = getattr(pl_module, 'skip_dropout_history', None)
        if getattr(self, '_skip_history', None) is not None and isinstance(skips, list):
            skips[:] = [tuple(x) for x in self._skip_history]
        self._history = self._skip_history = None


def saved_settings(checkpoint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The settings a :class:`ResumeState` stored in a Lightning checkpoint (None: not a run of this package)."""
    for key, state in (checkpoint.get('callbacks') or {}).items():
        if str(key).startswith('ResumeState') and isinstance(state, dict):
            return state.get('settings')
    return None
