"""``python -m nni_darts_ext train``: its options (:class:`TrainCommand` and the recipe,
:class:`~nni_darts_ext.settings.RetrainSettings`), reading them, and running :func:`~nni_darts_ext.retrain.retrain`.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..settings import PRESET_ALIASES, PRESETS, RETRAIN_PRESETS, RetrainSettings, preset_help, preset_name
from .common import set_threads, threads_option
from .options import OptionError, add_options, dump_config, merge, read_config, unknown_keys

__all__ = ['TrainCommand', 'add_arguments', 'train_settings', 'run']


@dataclass
class TrainCommand:
    """The options of ``python -m nni_darts_ext train`` besides the recipe (:class:`RetrainSettings`): what to train,
    where, and how to run. Each field is an option and a ``--config`` key (:mod:`nni_darts_ext.options`)."""

    arch: Optional[str] = field(default=None, metadata={
        'help': 'arch JSON file (arch.json or summary.json of a search; ours or NNI hub DARTS labels), or a search '
                'folder'})
    genotype: Optional[str] = field(default=None, metadata={
        'help': 'published genotype: DARTS_V1, DARTS_V2, PDARTS, PC_DARTS_CIFAR'})
    dataset: Optional[str] = field(default=None, metadata={
        'help': 'fashion-mnist | mnist | cifar10 | digits (default: the search\'s, for an arch from a search folder; '
                'else the preset\'s: ' + ', '.join(f'{name} {p["dataset"]}' for name, p in PRESETS.items())
                + ')'})
    out: str = field(default='runs/retrain', metadata={'help': 'output folder (resumes from its last.ckpt)'})
    preset: Optional[str] = field(default=None, metadata={
        'choices': (*RETRAIN_PRESETS, *PRESET_ALIASES), 'help': preset_help(
            'train', 'reference: the DARTS recipe (GPU scale); cpu (alias: small): minutes on 2 CPU cores; tiny: '
                     'seconds; the same names as search; explicit options win over it (default: reference).')})
    resume: bool = field(default=True, metadata={
        'help': 'continue from out/checkpoints/last.ckpt; --no-resume: --out must hold no run (or pass --overwrite)'})
    overwrite: bool = field(default=False, metadata={
        'help': 'delete the run already in --out (results, checkpoints, logs) and start a new one'})
    plots: bool = field(default=True, metadata={'help': 'draw the cells'})
    data_dir: Optional[str] = field(default=None, metadata={'help': 'dataset root'})
    download: bool = field(default=False, metadata={
        'help': 'let torchvision download CIFAR-10 into --data-dir when it is not there (needs internet)'})
    progress_bar: Optional[bool] = field(default=None, metadata={
        'help': 'the Lightning progress bar (default: only on a terminal; else one log line per epoch)'})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, TrainCommand)
    add_options(p, RetrainSettings, title='recipe (default: the DARTS evaluation recipe, then --preset, then these)')


def train_settings(args: argparse.Namespace) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """``(TrainCommand fields, RetrainSettings overrides, config file)`` of parsed ``train`` arguments."""
    config = read_config(args.config) if getattr(args, 'config', None) else {}
    unknown = unknown_keys(config, TrainCommand, RetrainSettings, extra=('threads',))
    if unknown:
        raise OptionError(f'unknown option(s) {unknown} in {args.config}; allowed: the train options '
                          '(python -m nni_darts_ext train --help)')
    command = dataclasses.asdict(TrainCommand(**merge(TrainCommand, args, config)))
    if (command['arch'] is None) == (command['genotype'] is None):
        raise ValueError('train needs exactly one of --arch FILE and --genotype NAME (or the key arch / genotype '
                         'in --config).')
    return command, merge(RetrainSettings, args, config), config


def run(args: argparse.Namespace) -> int:
    command, overrides, config = train_settings(args)
    threads = threads_option(args, config)
    if getattr(args, 'print_config', False):
        recipe = RetrainSettings().replace(**{**RETRAIN_PRESETS[preset_name(command['preset'])], **overrides})
        print(dump_config({**{k: v for k, v in command.items() if v is not None}, **dataclasses.asdict(recipe),
                           'threads': threads}), end='')
        return 0
    set_threads(threads)
    source = command.pop('arch') or command.pop('genotype')
    command.pop('genotype', None)
    from ..retrain import retrain
    result = retrain(source, **command, **overrides)
    from ..oneshot.distributed import is_rank_zero
    if is_rank_zero():
        print(result.headline())
        print(f'summary: {result.out / "summary.json"}')
    return 0
