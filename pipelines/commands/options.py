"""Click options generated from a command's argument dataclass, so that an option's name, type,
default and help are written once, in the dataclass field:

    person_max: int = field(default=50, metadata={"help": "Maximum people per keyframe."})

`dataclass_options(Args, ...)` turns every field (in declaration order) into `--person-max`:
  type     from the annotation: int, float, str; `X | None` is X with default None; bool is a flag
           (`--x` when the default is False, `--x/--no-x` when it is True); `tuple[str, ...]` is a
           repeatable option;
  default  the field's default (or default_factory()); a field without one is a required option;
  help     `metadata["help"]`, which every generated option must have.
What only click knows stays in the command module: another option name (`decls`, e.g. `--out` for
`out_dir`) and a stricter click type (`types`: Choice, IntRange, Path(exists=True)). An option
that does not map 1:1 onto a field (a repeated `KEY=VALUE` parsed into a dict, a flag that sets
another field, a default that depends on another option) stays an explicit `click.option`;
tests/pipelines/commands/test_options.py checks every option of every command against its dataclass
either way.
"""
from __future__ import annotations

import dataclasses
import types as _types
import typing
from collections.abc import Callable, Iterable, Mapping

import click

from stagecache.core.boxes import BOX_SETS


# The actor boxes a command reads from a store (`base/actor_is_gt` rows, proposal rows, or both).
BOXES = click.Choice(list(BOX_SETS))


def _without_none(hint):
    """`X | None` -> X; any other annotation as it is."""
    if typing.get_origin(hint) in (typing.Union, _types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def field_default(f: dataclasses.Field):
    """The default of a dataclass field, or `dataclasses.MISSING` when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def default_of(cls, name: str):
    """The default of the field `name` of the dataclass `cls`: for an explicit option that must agree."""
    return field_default(next(f for f in dataclasses.fields(cls) if f.name == name))


def field_option(cls, f: dataclasses.Field, hint, *, decl: str | None = None,
                 type: click.ParamType | None = None) -> Callable:
    """The click option of one field of the dataclass `cls` (see the module docstring)."""
    help_text = f.metadata.get("help")
    if not help_text:
        raise TypeError(f"{cls.__name__}.{f.name}: a generated option needs metadata={{'help': ...}}")
    dashed = "--" + f.name.replace("_", "-")
    default = field_default(f)
    base = _without_none(hint)
    kw: dict = {"help": help_text, "show_default": True}
    if default is dataclasses.MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    if base is bool:
        kw["is_flag"] = True
        if default is True and decl is None:  # on by default: the option must be able to turn it off
            decl = f"{dashed}/--no-{f.name.replace('_', '-')}"
    elif typing.get_origin(base) is tuple:  # tuple[str, ...]: the option is repeated
        kw["multiple"] = True
        kw["type"] = type or typing.get_args(base)[0]
    elif base in (int, float, str):
        kw["type"] = type or base
    else:
        raise TypeError(f"{cls.__name__}.{f.name}: no click option for the type {hint!r}; write it explicitly")
    return click.option(decl or dashed, f.name, **kw)


def dataclass_options(cls, *, skip: Iterable[str] = (), decls: Mapping[str, str] | None = None,
                      types: Mapping[str, click.ParamType] | None = None) -> Callable:
    """Decorator adding one click option per field of the dataclass `cls` but those in `skip`, in
    field order. `decls`: field -> option name where it is not `--<field-with-dashes>`; `types`:
    field -> click type replacing the annotation's."""
    decls, types, skip = dict(decls or {}), dict(types or {}), set(skip)
    hints = typing.get_type_hints(cls)
    unknown = (skip | set(decls) | set(types)) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    opts = [field_option(cls, f, hints[f.name], decl=decls.get(f.name), type=types.get(f.name))
            for f in dataclasses.fields(cls) if f.name not in skip]

    def decorate(fn):
        for opt in reversed(opts):  # click lists options in the order the decorators are written
            fn = opt(fn)
        return fn

    return decorate
