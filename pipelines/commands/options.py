"""Click options generated from a command's argument dataclass, so that an option's name, type,
default and help are written once, in the dataclass field:

    person_max: int = field(default=50, metadata={"help": "Maximum people per keyframe.", "range": {"min": 1}})

`dataclass_options(Args)` turns every field into `--person-max` (fields in declaration order, those
with a "group" after the others). From the field:
  type     the annotation: int, float, str; `X | None` is X with default None; bool is a flag (`--x`
           when the default is False, `--x/--no-x` when it is True); list[X] / tuple[X, ...] a
           repeatable option (a list, or a tuple, of X); dict a repeatable `KEY=VALUE` option;
  default  the field's default (or default_factory()); a field without one is required.
The metadata, plain data (but `parse`) so that the dataclass's module needs no click; every key but
"help" is optional:
  help         the option's help (required, also for an argument, where click does not show it);
  option       its name when not `--<field-with-dashes>` ("--out"; a bool may be "--separate-gt/--mixed");
  off          a flag (e.g. "--no-cap", "--no-amp") that sets the field to False (a bool) or None;
               without it the field keeps its default;
  argument     True: a positional argument (STORE) instead of an option;
  choices      the valid values (click.Choice; for a list field, of each value);
  metavar      the value's name in --help;
  path         click.Path keywords ({"exists": True, "dir_okay": False});
  range        click.IntRange / FloatRange keywords ({"min": 1}, {"min": 0, "max": 0.5, "max_open": True});
  sep          a list/tuple field given as one separated value (",": `--pose-ids 1,2`), not repeated;
  json         True: a dict field given as one JSON object (`--backbone-args '{"model_depth": 50}'`);
  parse        a function applied to the option's value (after the conversions above; for a dict
               field, to the tuple of KEY=VALUE pairs, which without it reach the command as they are:
               train-head types them by the --head chosen, which a click callback cannot see); its
               ValueError is click's usage error naming the option;
  show_default what --help shows as the default where the field's is None (text) or nothing (False);
  group        a heading: the option is listed under it after the common ones (`Command`);
  no_option    why the field has no option (the command fills it, e.g. the command line);
  stored       not an option's: whether the field changes what `extract features` stores ("base",
               "features" or None; extract/features_record.py).
An unknown key, a field without help and an option for a field the dataclass lacks are TypeErrors.
The command's callback learns its dataclass (`callback.args_dataclass`), which
tests/pipelines/commands/test_options.py uses to check every command against its dataclass.
"""
from __future__ import annotations

import dataclasses
import json
import types as _types
import typing
from collections.abc import Callable, Iterable, Mapping

import click

META_KEYS = frozenset({"help", "option", "off", "argument", "choices", "metavar", "path", "range", "sep", "json",
                       "parse", "show_default", "group", "no_option", "stored"})


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


class Option(click.Option):
    """A click option that remembers its --help heading (metadata "group")."""

    def __init__(self, *args, group: str | None = None, **kw):
        super().__init__(*args, **kw)
        self.group = group


class Command(click.Command):
    """A click command whose --help lists the options of each "group" under its own heading, after
    the common ones (click itself has one "Options" section)."""

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {"Options": []}
        for p in self.get_params(ctx):
            rec = p.get_help_record(ctx)
            if rec is not None:
                sections.setdefault((p.group if isinstance(p, Option) else None) or "Options", []).append(rec)
        # One column width for every section (click sizes each list by its own names; 30: click's cap).
        width = min(max((len(name) for rows in sections.values() for name, _ in rows), default=0), 30)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl([(name.ljust(width), text) for name, text in rows])


def _elem_type(base):
    """The element type of list[X] / tuple[X, ...]."""
    args = [a for a in typing.get_args(base) if a is not Ellipsis]
    return args[0] if args else str


def _click_type(meta: Mapping, base):
    if "choices" in meta:
        return click.Choice([str(c) for c in meta["choices"]])
    if "path" in meta:
        return click.Path(**(meta["path"] if isinstance(meta["path"], Mapping) else {}))
    if "range" in meta:
        return (click.IntRange if base is int else click.FloatRange)(**meta["range"])
    return base


def _split(text: str, sep: str, elem, choices, origin):
    """`"1,2"` -> [1, 2] (a list, or a tuple for a tuple field), each value of type `elem` and
    among `choices` when given."""
    parts = [t.strip() for t in (text or "").split(sep) if t.strip()]
    try:
        values = [elem(t) for t in parts]
    except ValueError:
        kind = {int: "integers", float: "numbers"}.get(elem, "values")
        raise ValueError(f"expected {'comma' if sep == ',' else repr(sep)}-separated {kind}, got {text!r}") from None
    if choices is not None:
        bad = sorted({str(v) for v in values} - {str(c) for c in choices})
        if bad:
            raise ValueError(f"unknown value(s) {bad}; valid: {', '.join(str(c) for c in choices)}")
    return tuple(values) if origin is tuple else values


def _json_object(text: str) -> dict:
    if not text:
        return {}
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError("must be a JSON object")
    return d


def _callback(steps: list[Callable]):
    """A click callback applying `steps` in turn; a ValueError is click's error naming the option."""
    if not steps:
        return None

    def callback(ctx, param, value):
        try:
            for step in steps:
                value = step(value)
        except click.BadParameter:
            raise
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        return value

    return callback


def field_option(cls, f: dataclasses.Field, hint) -> Callable | None:
    """The click option (or argument) of one field of the dataclass `cls` (see the module docstring);
    None for a field with metadata "no_option"."""
    meta, where = f.metadata, f"{cls.__name__}.{f.name}"
    unknown = set(meta) - META_KEYS
    if unknown:
        raise TypeError(f"{where}: unknown metadata {sorted(unknown)}; valid: {', '.join(sorted(META_KEYS))}")
    if meta.get("no_option"):
        return None
    if not meta.get("help"):
        raise TypeError(f"{where}: a generated option needs metadata={{'help': ...}}")
    default, base = field_default(f), _without_none(hint)
    origin = typing.get_origin(base) or base
    decl = meta.get("option") or "--" + f.name.replace("_", "-")
    kw: dict = {"help": meta["help"], "show_default": meta.get("show_default", True)}
    steps: list[Callable] = []
    if default is dataclasses.MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    if "off" in meta:  # a flag turning the field off: its default otherwise
        if default is dataclasses.MISSING or "option" in meta:
            raise TypeError(f"{where}: an 'off' flag needs a default and no 'option'")
        off = False if base is bool else None
        decl, kw["is_flag"], kw["default"] = meta["off"], True, False
        steps.append(lambda given: off if given else default)
    elif base is bool:
        kw["is_flag"] = True
        if default is True and "/" not in decl:  # on by default: the option must be able to turn it off
            decl = f"{decl}/--no-{decl[2:]}"
    elif origin is dict:
        if meta.get("json"):
            kw["type"], kw["default"] = str, json.dumps(default) if default else ""
            steps.append(_json_object)
        else:
            if default:
                raise TypeError(f"{where}: a KEY=VALUE option starts empty")
            kw.update(multiple=True, type=str, default=(), metavar=meta.get("metavar", "KEY=VALUE"))
    elif origin in (list, tuple):
        elem = _elem_type(base)
        if "sep" in meta:
            kw["type"] = str
            if default is not dataclasses.MISSING:
                kw["default"] = meta["sep"].join(str(v) for v in default)
            choices = meta.get("choices")
            steps.append(lambda text, sep=meta["sep"]: _split(text, sep, elem, choices, origin))
        else:
            kw["multiple"], kw["type"] = True, _click_type(meta, elem)
            if default is not dataclasses.MISSING:
                kw["default"] = tuple(default)
            steps.append(tuple if origin is tuple else list)
    elif base in (int, float, str):
        kw["type"] = _click_type(meta, base)
    else:
        raise TypeError(f"{where}: no click option for the type {hint!r}")
    if "metavar" in meta:
        kw["metavar"] = meta["metavar"]
    if "parse" in meta:
        steps.append(meta["parse"])
    kw["callback"] = _callback(steps)
    if meta.get("argument"):
        kw.pop("help"), kw.pop("show_default")
        return click.argument(f.name, **kw)
    return click.option(decl, f.name, cls=Option, group=meta.get("group"), **kw)


def dataclass_options(cls, *, skip: Iterable[str] = ()) -> Callable:
    """Decorator adding one click option per field of the dataclass `cls` (but those in `skip` and
    those with metadata "no_option"): the common ones in field order, then each group's."""
    skip = set(skip)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = skip - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    chosen = sorted((f for f in fields if f.name not in skip), key=lambda f: f.metadata.get("group") is not None)
    opts = [o for o in (field_option(cls, f, hints[f.name]) for f in chosen) if o is not None]

    def decorate(fn):
        for opt in reversed(opts):  # click lists options in the order the decorators are written
            fn = opt(fn)
        fn.args_dataclass = cls
        return fn

    return decorate
