"""Command-line options generated from a settings dataclass, YAML config files, and one coercion of values.

One definition per command: every field of the dataclass (``SearchSettings``, ``RetrainConfig`` ...) becomes an
option ``--field-name`` without any code; ``field(metadata=...)`` may add

``help``      the help text (the default is appended);
``flags``     more option strings for the same field (aliases kept from older CLIs: ``('--lr',)``);
``negative``  the option string that sets a boolean field to False (default ``--no-field-name``);
``choices``, ``nargs``, ``metavar``   as in argparse;
``cli``       False: not an option (still a config-file key).

Options default to "not given" (``argparse.SUPPRESS``), so :func:`merge` can apply the order
dataclass default < ``--config FILE.yaml`` < command line, and presets only fill what neither set.
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import os
import typing
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = ['OptionError', 'add_options', 'option_names', 'coerce', 'read_config', 'merge', 'dump_config',
           'field_hints']


class OptionError(ValueError):
    """A config-file key or value (or a tuner parameter) that the settings do not accept."""


def field_hints(cls: type) -> Dict[str, Any]:
    """``{field name: type hint}`` of a dataclass, resolved (``from __future__ import annotations`` strings)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap(hint: Any) -> Tuple[Any, bool]:
    """``(hint without Optional, whether None is allowed)``."""
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), True
    return hint, False


def _is_sequence(hint: Any) -> bool:
    return typing.get_origin(hint) in (collections.abc.Sequence, list, tuple)


def _dash(name: str) -> str:
    return '--' + name.replace('_', '-')


def option_names(cls: type) -> Dict[str, str]:
    """``{spelling: field}`` for every way a field may be named in a config file or by a tuner: the field name,
    its dashed form and every option string without the leading dashes (``lr`` -> ``learning_rate``)."""
    names: Dict[str, str] = {}
    for f in dataclasses.fields(cls):
        for spelling in (f.name, f.name.replace('_', '-'), *f.metadata.get('flags', ())):
            names[spelling.lstrip('-')] = f.name
            names[spelling.lstrip('-').replace('-', '_')] = f.name
    return names


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def add_options(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = (),
                defaults: Optional[Mapping[str, Any]] = None, title: Optional[str] = None) -> List[str]:
    """Add one option per field of dataclass ``cls`` (see the module doc); returns the field names added.

    ``defaults`` only changes the default shown in the help (e.g. a trial's output folder).
    """
    group = parser.add_argument_group(title) if title else parser
    hints = field_hints(cls)
    added = []
    shown = dict(defaults or {})
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or meta.get('cli', True) is False:
            continue
        hint, _ = _unwrap(hints[f.name])
        default = shown.get(f.name, _default(f))
        text = meta.get('help', '')
        if 'default' not in text and default is not None:  # "None" would tell nothing; a text may say it itself
            text = f'{text} (default: {default})' if text else f'default: {default}'
        flags = [_dash(f.name), *meta.get('flags', ())]
        kwargs: Dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS)
        if hint is bool:
            negative = meta.get('negative', '--no-' + f.name.replace('_', '-'))
            group.add_argument(*flags, action='store_true', help=text, **kwargs)
            group.add_argument(negative, action='store_false', help=f'sets {f.name} to False', **kwargs)
        else:
            if _is_sequence(hint):
                args = typing.get_args(hint)
                kwargs['type'] = _scalar_type(args[0] if args else str)
                kwargs['nargs'] = meta.get('nargs', '+')
            else:
                kwargs['type'] = _scalar_type(hint)
                if 'nargs' in meta:
                    kwargs['nargs'] = meta['nargs']
            for key in ('choices', 'metavar'):
                if key in meta:
                    kwargs[key] = meta[key]
            group.add_argument(*flags, help=text, **kwargs)
        added.append(f.name)
    return added


def _scalar_type(hint: Any) -> Any:
    return hint if hint in (int, float, str) else str


def coerce(name: str, value: Any, hint: Any, error: type = OptionError) -> Any:
    """``value`` (from YAML, JSON or a tuner) as the type ``hint`` of field ``name``; ``error`` names both."""
    hint, optional = _unwrap(hint)
    if value is None:
        if optional:
            return None
        raise error(f'parameter {name!r}: None is not allowed')
    bad = error(f'parameter {name!r}: {value!r} ({type(value).__name__}) is not a valid '
                f'{getattr(hint, "__name__", hint)}')
    if _is_sequence(hint):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise error(f'parameter {name!r}: {value!r} is not a list')
        args = typing.get_args(hint)
        return tuple(coerce(name, v, args[0] if args else Any, error) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ('true', 'false', '1', '0', 'yes', 'no'):
            return value.lower() in ('true', '1', 'yes')
        raise bad
    if hint in (int, float):
        if isinstance(value, bool):
            raise bad
        if hint is int and isinstance(value, float):  # quniform / randint give floats
            if value.is_integer():
                return int(value)
            raise bad
        if isinstance(value, (int, float, str)):
            try:
                return hint(value)
            except ValueError:
                raise bad from None
        raise bad
    if hint is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise bad
    return value


def normalise(cls: type, values: Mapping[str, Any], source: str, aliases: Optional[Mapping[str, str]] = None,
              error: type = OptionError) -> Dict[str, Any]:
    """``values`` keyed by field name and coerced; unknown keys raise ``error`` listing the accepted ones."""
    names = {**option_names(cls), **(aliases or {})}
    hints = field_hints(cls)
    out: Dict[str, Any] = {}
    seen: Dict[str, str] = {}
    for raw, value in values.items():
        key = names.get(str(raw)) or names.get(str(raw).replace('-', '_'))
        if key is None:
            raise error(f'unknown {source} parameter {raw!r}; allowed: {", ".join(sorted(hints))}'
                        + (f' (aliases: {", ".join(sorted(aliases))})' if aliases else ''))
        if key in seen:
            raise error(f'parameters {seen[key]!r} and {raw!r} both set {key!r}')
        seen[key] = str(raw)
        out[key] = coerce(str(raw), value, hints[key], error)
    return out


def read_config(path: os.PathLike | str) -> Dict[str, Any]:
    """The mapping of a YAML (or JSON) config file; ``OptionError`` for a missing or malformed file."""
    import yaml
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise OptionError(f'config file {str(path)!r} does not exist') from None
    except yaml.YAMLError as err:
        raise OptionError(f'config file {str(path)!r} is not valid YAML: {err}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionError(f'config file {str(path)!r} must hold a mapping of option names to values')
    return data


def merge(cls: type, args: argparse.Namespace, config: Optional[Mapping[str, Any]] = None,
          source: str = 'config-file') -> Dict[str, Any]:
    """The fields of ``cls`` that the config file or the command line set (the command line wins)."""
    values = normalise(cls, {k: v for k, v in (config or {}).items() if k in option_names(cls)}, source)
    fields = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in fields})
    return values


def unknown_keys(config: Mapping[str, Any], *classes: type, extra: Sequence[str] = ()) -> List[str]:
    """Config-file keys that no class (and no extra name) accepts."""
    known = set(extra).union(*(option_names(c) for c in classes))
    return sorted(str(k) for k in config if str(k) not in known and str(k).replace('-', '_') not in known)


def dump_config(values: Mapping[str, Any]) -> str:
    """YAML text of ``values`` that ``--config`` reads back (tuples as lists)."""
    import yaml

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return v
    return yaml.safe_dump({k: plain(v) for k, v in values.items()}, sort_keys=False)
