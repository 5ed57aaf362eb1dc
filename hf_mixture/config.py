"""One parser for config dataclasses: CLI flags and YAML files are the same thing.

Each config is a dataclass whose fields carry their help text in
``field(metadata={"help": ...})``.  :func:`add_dataclass_arguments` turns the
fields into ``--flags``; :func:`dataclass_from_dict` builds the dataclass from a
YAML/JSON mapping and names any unknown key; :func:`load_config_file` reads a
file with ``yaml.safe_load``.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Demo:
...     k: int = field(default=8, metadata={"help": "clusters"})
>>> dataclass_from_dict(Demo, {"k": 3})
Demo(k=3)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import HFMixtureError

T = TypeVar("T")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value to the field type ``tp``; the error names ``where``."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise HFMixtureError(f"{where} must not be empty (null).")
    origin = typing.get_origin(base)
    ok = True
    if base is bool:
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            value = _BOOL_WORDS[value.lower()]
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
        value = int(value) if ok else value
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, (str, os.PathLike))
        value = str(value) if ok else value
    elif origin in (list, tuple):
        ok = isinstance(value, (list, tuple))
        if ok:
            item = (typing.get_args(base) or (Any,))[0]
            value = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    elif dataclasses.is_dataclass(base):
        ok = isinstance(value, Mapping)
        value = dataclass_from_dict(base, value, where=where) if ok else value
    if not ok:
        name = getattr(base, "__name__", str(base))
        raise HFMixtureError(f"{where} has value {value!r}, which is not a valid {name}.")
    return value


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str | None = None) -> T:
    """Build ``cls`` from a mapping; unknown keys and wrong types are named in the error."""
    data = dict(data or {})
    label = where or cls.__name__
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise HFMixtureError(
            f"{label}: unknown key(s) {', '.join(map(repr, unknown))}; known keys are "
            f"{', '.join(sorted(names))}."
        )
    hints = _field_types(cls)
    kwargs = {k: _coerce(v, hints[k], f"{label}: field '{k}'") for k, v in data.items()}
    return cls(**kwargs)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON mapping (``yaml.safe_load`` semantics, a key given twice refused)."""
    import yaml

    from ._yaml import load_yaml

    p = Path(path)
    if not p.is_file():
        raise HFMixtureError(f"Config file '{p}' does not exist.")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), f"Config file '{p}'")
    except yaml.YAMLError as err:
        raise HFMixtureError(f"Config file '{p}' is not valid YAML: {str(err).splitlines()[0]}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HFMixtureError(f"Config file '{p}' must hold a mapping of keys to values, not {type(data).__name__}.")
    return data


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per field of ``cls`` (defaults left as None so a config file can fill them)."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        base, _ = _unwrap_optional(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {default})")
        elif typing.get_origin(base) in (list, tuple):
            (item,) = typing.get_args(base)[:1] or (str,)
            parser.add_argument(flag, dest=f.name, nargs="+", type=item if item in (int, float, str) else str,
                                default=None, help=f"{help_text} (default: {default})")
        elif base in (int, float, str):
            parser.add_argument(flag, dest=f.name, type=base, default=None,
                                help=f"{help_text} (default: {default})")


def overrides_from_args(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (not None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def config_from_args(cls: type[T], args: argparse.Namespace, *, config_file: str | None = None,
                     section: str | None = None) -> T:
    """File values (optionally one ``section`` of it), then command-line flags on top."""
    data: dict[str, Any] = {}
    where = cls.__name__
    if config_file:
        loaded = load_config_file(config_file)
        if section is not None:
            loaded = loaded.get(section) or {}
            if not isinstance(loaded, dict):
                raise HFMixtureError(f"{config_file}: section '{section}' must be a mapping.")
        data.update(loaded)
        where = f"{config_file}" + (f" [{section}]" if section else "")
    data.update(overrides_from_args(args, cls))
    return dataclass_from_dict(cls, data, where=where)
