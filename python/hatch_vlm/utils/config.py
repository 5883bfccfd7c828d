"""Configs as dataclasses, loaded from YAML/JSON with strict checking: an unknown key, a wrong type or
an impossible value fails at load time with one message naming the key path (e.g.
`config.grpo.num_generations: must be >= 2, got 1`).

One validation style: every config dataclass checks itself in `__post_init__` with `check` (a ConfigError
naming the key), so an object is valid whether it came from a file or from Python.

Stage options that wrap a TRL / transformers config (SFTConfig, GRPOConfig) hold our own fields plus a dict
of that config's fields by their own names: a class with `__unknown_keys_into__ = "trl"` gets every key that
is not one of its fields gathered into its `trl` dict, which `check_foreign_fields` checks against the
foreign dataclass (`trl_kwargs` then builds its constructor arguments).
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration; the message names the offending key."""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{k}]") for k, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):       # e.g. transformers' SchedulerType
        try:
            tp(value)
        except ValueError:
            raise ConfigError(f"{where}: must be one of {[m.value for m in tp]}, got {value!r}") from None
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Builds dataclass `cls` from a mapping, recursively; rejects unknown keys and wrong types, then
    runs the dataclass's own `__post_init__` checks (which should raise ConfigError)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields and key in getattr(cls, "RENAMED", {}):     # a name of an earlier version
            raise ConfigError(f"{where}.{key}: {cls.RENAMED[key]}")
    unknown = sorted(set(data) - set(fields))
    into = getattr(cls, "__unknown_keys_into__", None)
    if unknown and into:
        # e.g. TRL fields written beside ours in a stage section: the class checks them itself
        given = data.get(into) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{where}.{into}: expected a mapping, got {given!r}")
        twice = sorted(set(given) & set(unknown))
        if twice:
            raise ConfigError(f"{where}: {', '.join(map(repr, twice))} given both in {into!r} and beside it")
        data = {**{k: v for k, v in data.items() if k in fields}, into: {**given, **{k: data[k] for k in unknown}}}
        unknown = []
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(k) for k in unknown)} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}.{msg}") from None


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def load_mapping(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def check_foreign_fields(cls, values: dict[str, Any], own: Any, *, renamed: dict[str, str] | None = None,
                         reserved: dict[str, str] | None = None, aliases: dict[str, str] | None = None) -> None:
    """Each key of `values` must be an init field of dataclass `cls` (e.g. trl.SFTConfig) and of its type.

    `own`: our own field names (named in the error for an unknown key); `renamed`: {old name: message} for
    names that are not accepted any more; `reserved`: {field: why} for fields the stage sets itself;
    `aliases`: {our name: its field name in `cls`} for names we accept that this version of `cls` may spell
    otherwise. The values are only checked, never converted: they reach `cls` as written."""
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:        # an annotation this Python cannot resolve: check names only
        hints = {}
    for key, value in values.items():
        if renamed and key in renamed:
            raise ConfigError(f"{key}: {renamed[key]}")
        if reserved and key in reserved:
            raise ConfigError(f"{key}: set by the stage itself ({reserved[key]}); not an option")
        name = (aliases or {}).get(key, key)
        if name not in fields and key not in (aliases or {}):
            close = difflib.get_close_matches(key, [*fields, *own], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"{key}: unknown key, neither one of ours ({', '.join(sorted(own))}) nor a field "
                              f"of {cls.__module__.split('.')[0]}.{cls.__name__}{hint}")
        if name in hints:
            _convert(value, hints[name], key)


# transformers 5.2x renamed TrainingArguments.gradient_checkpointing(_kwargs) to activation_checkpointing(_kwargs)
# and warns (FutureWarning) whenever the old name holds a value and the new one does not.
CHECKPOINTING_NAMES = {"activation_checkpointing": "gradient_checkpointing",
                       "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}
OLD_CHECKPOINTING_NAMES = {old: f"transformers' deprecated name: use {new}" for new, old in CHECKPOINTING_NAMES.items()}


def trl_kwargs(cls, defaults: dict[str, Any], user: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `cls` (a TRL config): our defaults, then the user's fields, then what the stage sets.

    Activation checkpointing goes under the name the installed transformers uses. TRL's configs default the
    old name, `gradient_checkpointing`, to True, and that default alone made transformers warn on every
    SFTConfig / GRPOConfig; so the setting (the user's, else that default: checkpointing stays on, as before)
    is passed as `activation_checkpointing`, or as the old name on a transformers that predates the new one."""
    kw = {**defaults, **user, **stage}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for new, old in CHECKPOINTING_NAMES.items():
        if new not in fields:
            if new in kw:
                kw[old] = kw.pop(new)
        elif new not in kw and old in fields and fields[old].default not in (None, dataclasses.MISSING):
            kw[new] = fields[old].default
    return kw


def effective(cls, defaults: dict[str, Any], user: dict[str, Any], name: str) -> Any:
    """The value field `name` of `cls` gets from `trl_kwargs(cls, defaults, user, ...)` (before the stage's own)."""
    if name in user:
        return user[name]
    if name in defaults:
        return defaults[name]
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def check(cond: bool, key: str, message: str) -> None:
    """For __post_init__: raise ConfigError('key: message') unless cond."""
    if not cond:
        raise ConfigError(f"{key}: {message}")
