"""One parser for every command: typed dataclasses are the flags, and ``--config FILE.yaml``
holds the same names.

:class:`ConfigParser` is transformers' ``HfArgumentParser`` used the way trl's ``TrlParser``
uses it: each field of the command's dataclasses is one ``--flag`` (``num_clusters`` ->
``--num-clusters`` or ``--num_clusters``) whose help is the field's ``metadata["help"]``;
a boolean is ``--name``/``--no-name``; ``metadata["choices"]`` are checked.  ``--config
FILE.yaml`` takes exactly the flag names as keys (dashes or underscores): the file's values
become the defaults, so a flag given on the command line wins over the file.  An unknown key
or a value of the wrong type is one sentence naming the key and the file.  Two kinds of field
are not flags: ``metadata={"positional": True}`` (INPUT, RECIPE: given on the command line,
never in the file) and a field whose type is itself a dataclass (a *section*, such as climb's
``cluster:``, set in the file only; its keys are checked against that dataclass' fields).

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Demo:
...     k: int = field(default=8, metadata={"help": "clusters"})
>>> ConfigParser([Demo], prog="demo").parse_args(["--k", "3"]).options
(Demo(k=3),)
>>> dataclass_from_dict(Demo, {"k": 3})
Demo(k=3)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

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
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
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


def checked_fields(cls, data: Mapping[str, Any] | None, *, where: str | None = None) -> dict[str, Any]:
    """``data`` as field values of the dataclass ``cls``: unknown keys and wrong types are
    named in the error (``where`` says whose keys they are)."""
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
    return {k: _coerce(v, hints[k], f"{label}: field '{k}'") for k, v in data.items()}


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str | None = None) -> T:
    """Build ``cls`` from a mapping; unknown keys and wrong types are named in the error."""
    return cls(**checked_fields(cls, data, where=where))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON mapping (``yaml.safe_load`` semantics, a key given twice refused)."""
    import yaml

    from ._yaml import load_yaml

    p = Path(path)
    if not p.is_file():
        raise HFMixtureError(f"Config file '{p}' does not exist.")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), f"Config file '{p}'")
    except UnicodeDecodeError as err:
        raise HFMixtureError(f"Config file '{p}' is not UTF-8 text ({err.reason} at byte "
                             f"{err.start}).") from None
    except yaml.YAMLError as err:
        raise HFMixtureError(f"Config file '{p}' is not valid YAML: {str(err).splitlines()[0]}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HFMixtureError(f"Config file '{p}' must hold a mapping of keys to values, not {type(data).__name__}.")
    return data




def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(_unwrap_optional(tp)[0])


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already says what the default is, or it is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class ConfigParser(HfArgumentParser):
    """``HfArgumentParser`` over ``dataclass_types`` plus ``--config FILE.yaml`` (see the module).

    ``parse_args`` returns a namespace whose ``options`` are the dataclass instances, in the
    order of ``dataclass_types``; ``intermixed=True`` lets positionals and flags mix in any
    order (``train RECIPE --store S key=value --dry-run``).
    """

    def __init__(self, dataclass_types: Sequence[type] = (), *, intermixed: bool = False, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        # An abbreviated --conf would escape the --config scan below: no abbreviations.
        kwargs.setdefault("allow_abbrev", False)
        self._intermixed = intermixed
        self._parsing = False
        super().__init__(list(dataclass_types), **kwargs)
        self.add_argument("--config", metavar="FILE.yaml", default=None,
                          help="YAML file of this command's options: its keys are the flag names "
                               "(dashes or underscores); flags given here override it.")

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        if _is_section(field.type):
            return  # a section is set in the config file only
        meta = dict(field.metadata)
        base, _ = _unwrap_optional(field.type)
        has_default = field.default is not dataclasses.MISSING or \
            field.default_factory is not dataclasses.MISSING
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
        if meta.pop("positional", False):
            kwargs: dict[str, Any] = {"help": meta.get("help"), "metavar": meta.get("metavar")}
            if typing.get_origin(base) is list:
                kwargs.update(nargs="*", type=typing.get_args(base)[0], default=default)
            else:
                kwargs.update(type=base)
                if has_default:
                    kwargs.update(nargs="?", default=default)
            parser.add_argument(field.name, **kwargs)
            return
        if base is bool:
            # --name / --no-name taking no value (HfArgumentParser's optional value would eat a
            # positional that follows the flag).
            names = [f"--{field.name}"] + ([f"--{field.name.replace('_', '-')}"]
                                            if "_" in field.name else [])
            parser.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=bool(default), help=meta.get("help"))
            return
        HfArgumentParser._parse_dataclass_field(parser, field)

    # -- parsing --------------------------------------------------------------------------
    def parse_known_args(self, args=None, namespace=None):
        if self._parsing:  # the inner passes of an intermixed parse
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        path, args = _pop_config(args)
        saved = self._apply_config_file(path) if path else []
        self._parsing = True
        try:
            if self._intermixed:
                ns, rest = self.parse_known_intermixed_args(args, namespace)
            else:
                ns, rest = super().parse_known_args(args, namespace)
        finally:
            self._parsing = False
            for action, default, required in saved:
                action.default, action.required = default, required
            self._defaults = {k: v for k, v in self._defaults.items() if k not in self._sections()}
        ns.config = path
        ns.options = self._build(ns)
        return ns, rest

    def _sections(self) -> dict[str, type]:
        out = {}
        for dtype in self.dataclass_types:
            hints = _field_types(dtype)
            out.update({f.name: _unwrap_optional(hints[f.name])[0] for f in dataclasses.fields(dtype)
                        if f.init and _is_section(hints[f.name])})
        return out

    def _file_keys(self) -> dict[str, argparse.Action]:
        """The flags a config file may set, by field name (positionals are not among them)."""
        fields = {f.name for dtype in self.dataclass_types for f in dataclasses.fields(dtype)
                  if f.init and not f.metadata.get("positional")}
        return {a.dest: a for a in self._actions if a.dest in fields and a.option_strings}

    def _apply_config_file(self, path: str) -> list[tuple[argparse.Action, Any, bool]]:
        """The file's values become the defaults; returns what to restore after parsing."""
        data = load_config_file(path)
        keys: dict[str, Any] = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name in keys:
                raise HFMixtureError(f"{path}: key {key!r} is given twice (dashes and underscores "
                                     "name the same option).")
            keys[name] = value
        actions, sections = self._file_keys(), self._sections()
        unknown = sorted(set(keys) - set(actions) - set(sections))
        if unknown:
            known = sorted(set(actions) | set(sections))
            raise HFMixtureError(
                f"{path}: unknown key(s) {', '.join(map(repr, unknown))} for `{self.prog}`; known "
                f"keys are {', '.join(known)}.")
        hints = {name: tp for dtype in self.dataclass_types for name, tp in _field_types(dtype).items()}
        saved = []
        for name, value in keys.items():
            if name in sections:
                if not isinstance(value, Mapping):
                    raise HFMixtureError(f"{path}: section '{name}' must be a mapping of "
                                         f"{sections[name].__name__} keys.")
                value = {str(k).replace("-", "_"): v for k, v in value.items()}
                self.set_defaults(**{name: checked_fields(sections[name], value,
                                                          where=f"{path} [{name}]")})
                continue
            action = actions[name]
            value = _coerce(value, hints[name], f"{path}: key '{name}'")
            if action.choices is not None and value is not None and value not in action.choices:
                raise HFMixtureError(f"{path}: key '{name}' is {value!r}; choose one of "
                                     f"{', '.join(map(str, action.choices))}.")
            saved.append((action, action.default, action.required))
            action.default, action.required = value, False
        return saved

    def _build(self, ns: argparse.Namespace) -> tuple:
        """The dataclass instances the parsed values describe (each validates itself)."""
        out = []
        for dtype in self.dataclass_types:
            names = [f.name for f in dataclasses.fields(dtype) if f.init]
            out.append(dtype(**{k: getattr(ns, k) for k in names if hasattr(ns, k)}))
        return tuple(out)


def _pop_config(args: list[str]) -> tuple[str | None, list[str]]:
    """``--config FILE`` (or ``--config=FILE``) taken out of ``args``; the last one wins."""
    path, rest, i = None, [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == "--config":
            if i + 1 >= len(args):
                raise HFMixtureError("--config needs a file name (--config FILE.yaml).")
            path, i = args[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest
