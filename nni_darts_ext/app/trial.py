"""One NNI trial = one whole one-shot search: ``python -m nni_darts_ext.trial [--strategy pcdarts] [search options]``.

nnictl (NNI 3.0) only runs HPO experiments, so the YAML configs in ``examples/`` run the DARTS-family search *inside*
a trial and let the tuner pick the strategy's hyper-parameters from the search space (``k``, ``arc_learning_rate``,
``seed``, ...; see :data:`PARAM_ALIASES` for the accepted spellings). What a trial does:

1. ``nni.get_next_parameter()`` first; the parameters override the command-line options. An unknown key or a bad
   value fails the trial at once (exit code 2) with the reason in ``trial.log`` and ``trial.stderr``.
2. The trial command channel and the parameter id are captured *before* the search: the search runs the strategy
   through NNI's ``SequentialExecutionEngine``, which swaps the default channel while it trains, so a plain
   ``nni.report_intermediate_result`` from inside the search would never reach the NNI manager.
3. A Lightning callback sends the supernet validation accuracy of every epoch through the captured channel
   (``{'default': val_acc, 'val_loss': ...}``), and the end of the search sends the final result
   ``{'default': val_acc, 'genotype': str, 'params': int, 'normal_skip_connects': int}``.
4. Every output (``arch.json``, ``genotype.txt``, ``summary.json``, TensorBoard logs, checkpoints) goes to
   ``$NNI_OUTPUT_DIR``, the trial's own folder, never the code folder.

Outside nnictl (no ``NNI_PLATFORM``) the same command is a plain search: parameters come from ``--params JSON``
only, the results are logged instead of reported, and the outputs go to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Mapping, Optional

import pytorch_lightning as pl

from ..quiet import quiet
from ..settings import SearchSettings
from .common import add_common_options, set_threads, threads_option
from .options import add_options, dump_config, normalise
from .search_command import search_settings

__all__ = ['TrialParameterError', 'PARAM_ALIASES', 'settings_from_params', 'NniReporter', 'final_result',
           'build_parser', 'main']

_logger = logging.getLogger('nni_darts_ext.trial')

#: Other spellings accepted for search-space keys (besides the :class:`~nni_darts_ext.settings.SearchSettings` fields).
PARAM_ALIASES = {
    'lr': 'learning_rate', 'lr_min': 'learning_rate_min', 'arc_lr': 'arc_learning_rate', 'pc_k': 'k', 'K': 'k',
    'C': 'width', 'init_channels': 'width', 'layers': 'cells',
}
#: Settings a trial must not take from the tuner (the output folder is ``$NNI_OUTPUT_DIR``).
FORBIDDEN_PARAMS = {'out': 'the output folder of a trial is $NNI_OUTPUT_DIR',
                    'progress_bar': 'a trial never draws a progress bar'}


class TrialParameterError(ValueError):
    """A search-space parameter the trial cannot use (unknown key, wrong type)."""


def settings_from_params(base: Any, params: Optional[Mapping[str, Any]]) -> Any:
    """``base`` (a :class:`SearchSettings`) with the tuner's ``params`` merged in, validated.

    Keys are the ``SearchSettings`` field names and option spellings (``-`` and ``_`` are the same) or an alias of
    :data:`PARAM_ALIASES`, read by :func:`~nni_darts_ext.app.options.normalise` as ``--config`` keys are. Raises
    :class:`TrialParameterError` for unknown keys and bad values, and ``ValueError`` for settings that
    :meth:`SearchSettings.resolved` rejects.
    """
    values = normalise(type(base), dict(params or {}), 'search-space', aliases=PARAM_ALIASES,
                       error=TrialParameterError)
    for key in values:
        if key in FORBIDDEN_PARAMS:
            raise TrialParameterError(f'parameter {key!r} cannot be set from the search space: '
                                      f'{FORBIDDEN_PARAMS[key]}')
    settings = dataclasses.replace(base, **values)
    resolved = settings.resolved()  # invalid strategy / preset / epochs fail here, before any data is read
    from ..data import get_info
    try:
        get_info(resolved.dataset)
    except ValueError as err:
        raise TrialParameterError(f'parameter dataset: {err}') from None
    return settings


class NniReporter(pl.Callback):
    """Sends each epoch's supernet validation accuracy, and the final result, through a trial command channel.

    ``channel`` and ``parameter_id`` must be taken before the search starts (see the module doc). Without an NNI
    manager the channel is NNI's standalone one, which only logs the values.
    """

    def __init__(self, channel: Any, parameter_id: Optional[int], trial_job_id: Optional[str],
                 metric: str = 'val_acc'):
        super().__init__()
        self.channel = channel
        self.parameter_id = parameter_id
        self.trial_job_id = trial_job_id
        self.metric = metric
        self.sequence = 0
        self.reported: List[Dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:  # DDP: rank 0 reports
            return
        metrics = trainer.callback_metrics
        acc = metrics.get(self.metric)
        if acc is None:
            _logger.warning('epoch %d: no %r in the logged metrics %s; nothing reported', trainer.current_epoch,
                            self.metric, sorted(metrics))
            return
        value: Dict[str, Any] = {'default': float(acc)}
        if metrics.get('val_loss') is not None:
            value['val_loss'] = float(metrics['val_loss'])
        self.send('PERIODICAL', value)

    def send(self, kind: str, value: Dict[str, Any]) -> None:
        sequence = self.sequence if kind == 'PERIODICAL' else 0
        # send_metric serialises ``value`` itself (nni.dump): pass the raw dict.
        self.channel.send_metric(type=kind, parameter_id=self.parameter_id, trial_job_id=self.trial_job_id,
                                 sequence=sequence, value=value)
        if kind == 'PERIODICAL':
            self.sequence += 1
        self.reported.append({'type': kind, 'sequence': sequence, 'value': value})
        _logger.info('reported %s result #%d: %s', kind.lower(), sequence, value)


def final_result(result: Any) -> Optional[Dict[str, Any]]:
    """The trial's final metric dict: ``default`` is the held-out accuracy of the briefly retrained derived network
    when ``retrain_epochs`` > 0, else the supernet's; ``supernet_val_acc`` is always there. None when
    the search logged no accuracy."""
    summary = result.summary()
    retrained = result.retrain_val_acc
    if result.val_acc is None and retrained is None:
        return None
    final = {'default': float(retrained if retrained is not None else result.val_acc),
             'supernet_val_acc': None if result.val_acc is None else float(result.val_acc),
             'genotype': summary['genotype'], 'params': int(summary['params']),
             'normal_skip_connects': int(summary['normal_skip_connects'])}
    if retrained is not None:
        final['retrain_val_acc'] = float(retrained)
        final['retrain_epochs'] = int(result.settings.retrain_epochs)
    return final


def build_parser() -> argparse.ArgumentParser:
    """The search options (generated from ``SearchSettings``, as for ``python -m nni_darts_ext search``), plus
    ``--params``, ``--config``, ``--print-config``, ``--threads`` and ``--verbose``."""
    p = argparse.ArgumentParser(
        prog='python -m nni_darts_ext.trial',
        description='One NNI trial: a whole one-shot search. Under nnictl the tuner\'s parameters override these '
                    'options and the outputs go to $NNI_OUTPUT_DIR.')
    add_options(p, SearchSettings, defaults={'out': 'runs/trial', 'progress_bar': 'only outside nnictl, on a terminal'})
    p.add_argument('--params', default=None,
                   help='JSON dict of parameters merged like the tuner\'s (mainly for runs outside nnictl)')
    add_common_options(p)
    p.add_argument('--resume', action='store_true', default=False,
                   help='continue the search in --out (under nnictl a restarted trial does so by itself)')
    p.add_argument('--overwrite', action='store_true', help='delete the run already in --out first')
    return p


def _manager_record(channel_url: Optional[str], trial_job_id: Optional[str], attempts: int = 5) -> Optional[dict]:
    """The parameter record that the NNI manager lists for this trial (what the web UI shows), or None."""
    import urllib.request
    if not channel_url or not trial_job_id or '/env/' not in channel_url:
        return None
    url = f'{channel_url.rsplit("/env/", 1)[0]}/api/v1/nni/trial-jobs/{trial_job_id}'
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                job = json.loads(response.read().decode())
            hyper = job.get('hyperParameters') or []
            if len(hyper) == 1:
                return json.loads(hyper[0])
            if len(hyper) > 1:  # a multi-phase / resumed trial: leave it alone
                return None
        except (OSError, ValueError) as err:
            _logger.debug('GET %s: %s', url, err)
        time.sleep(1.0 + attempt)
    _logger.warning('could not read the manager\'s record of trial %s from %s', trial_job_id, url)
    return None


def _use_recorded_parameters(received: dict, channel_url: Optional[str], trial_job_id: Optional[str]) -> dict:
    """Work around NNI 3.0's local training service handing parameters out in *request* order.

    With ``trialConcurrency`` > 1, the manager queues the tuner's parameter sets and gives the next one to whichever
    trial asks first, while its trial table (the web UI, ``/trial-jobs``) lists the set that was submitted *with*
    each trial (microsoft/nni#5726, microsoft/nni#5693). Both are bijections of the same sets, so a trial that runs
    the set the manager recorded for it (and reports under that set's parameter id) keeps the tuner, the web UI and
    the results in agreement.
    """
    recorded = _manager_record(channel_url, trial_job_id)
    if not recorded or 'parameters' not in recorded or 'parameter_id' not in recorded:
        return received
    if recorded.get('parameter_id') != received.get('parameter_id'):
        _logger.warning('NNI handed this trial parameter set %s %s, but its trial record (the web UI) lists set %s '
                        '%s; running the recorded set (microsoft/nni#5726)', received.get('parameter_id'),
                        received.get('parameters'), recorded['parameter_id'], recorded['parameters'])
        return recorded
    return received


def _fail(message: str, code: int, exc: Optional[BaseException] = None) -> int:
    if exc is not None:
        _logger.error('trial failed: %s', message, exc_info=exc)
    else:
        _logger.error('trial failed: %s', message)
    print(f'trial failed: {message}', file=sys.stderr, flush=True)
    return code


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ('-v', '--verbose') for a in argv)
    quiet(not verbose)
    args = build_parser().parse_args(argv)
    under_nni = bool(os.environ.get('NNI_PLATFORM'))
    if not under_nni:  # under NNI, ``import nni`` has already sent the root logger to trial.log
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format='[%(asctime)s] %(levelname)s %(name)s: %(message)s')
    import nni
    import nni.trial
    from nni.runtime.trial_command_channel import get_default_trial_command_channel

    from ..search import run_search  # the slow imports first: a bad parameter then fails at once

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # "Running trial code without runtime" outside nnictl
        params = nni.get_next_parameter() or {}
    # Captured before the search: SequentialExecutionEngine replaces the default channel (and nni.trial._params).
    channel = get_default_trial_command_channel()
    record = nni.trial._params
    trial_job_id = os.environ.get('NNI_TRIAL_JOB_ID')
    if under_nni and record:
        record = _use_recorded_parameters(record, os.environ.get('NNI_TRIAL_COMMAND_CHANNEL'), trial_job_id)
        nni.trial._params = record
        params = record['parameters'] or {}
    parameter_id = record['parameter_id'] if record else None
    from .. import __file__ as package_file, __version__
    _logger.info('trial %s: parameter id %s, parameters %s; nni_darts_ext %s from %s', nni.get_trial_id(),
                 parameter_id, params, __version__, os.path.dirname(package_file))

    try:
        extra = json.loads(args.params) if args.params else {}
        if not isinstance(extra, dict):
            raise TrialParameterError(f'--params must be a JSON object, not {args.params!r}')
        base, config = search_settings(args)
        if not hasattr(args, 'out') and 'out' not in config:
            base.out = 'runs/trial'
        if under_nni and base.progress_bar is None:
            base.progress_bar = False
        settings = settings_from_params(base, {**extra, **params})
        if args.print_config:
            print(dump_config(dataclasses.asdict(settings.resolved())), end='')
            return 0
        if under_nni:
            out_dir = os.environ.get('NNI_OUTPUT_DIR')
            if not out_dir:
                raise TrialParameterError('NNI_PLATFORM is set but NNI_OUTPUT_DIR is not')
            settings.out = out_dir
    except (TrialParameterError, ValueError, json.JSONDecodeError) as err:  # OptionError too
        return _fail(f'bad parameter: {err}', 2)

    set_threads(threads_option(args, config))
    reporter = NniReporter(channel, parameter_id, trial_job_id)
    try:
        # under nnictl a restarted trial continues its own run in $NNI_OUTPUT_DIR (docs/reliability.md)
        resume, overwrite = bool(args.resume), args.overwrite
        if under_nni and not (resume or overwrite):  # the trial's own folder: continue it, or start it again
            from ..rundir import resume_point
            resume, overwrite = ('auto', False) if resume_point(settings.out) else (False, True)
        result = run_search(settings, callbacks=[reporter], resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        return _fail('interrupted', 130)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:  # bad settings, missing data, divergence
        return _fail(str(err), 2, err)
    except Exception as err:  # noqa: BLE001 -- any crash must end the trial as FAILED with its traceback
        return _fail(f'{type(err).__name__}: {err}', 1, err)

    from ..oneshot.distributed import is_rank_zero
    if not is_rank_zero():  # a DDP search inside the trial: rank 0 reports
        return 0
    final = final_result(result)
    if final is None:
        return _fail('the search logged no validation accuracy; no final result', 1)
    reporter.send('FINAL', final)
    print(result.headline())
    print(f'outputs: {result.out.resolve()} (arch.json, genotype.txt, summary.json, logs/, checkpoints/)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
