"""`--head-arg KEY=VALUE` (and a preset's `head_args`) checked against the head's signature: values
parsed by the type the signature gives KEY (booleans strictly: true/false/yes/no/1/0), unknown or
repeated keys refused with the valid ones listed, each a one-line `HeadArgError`.
"""
from __future__ import annotations

import inspect
import json
import math

from stagecache.heads import HEADS, head_callables
from stagecache.pipelines.training.split import PreflightError

__all__ = ["HeadArgError", "head_parameters", "parse_head_args", "check_head_kwargs"]


class HeadArgError(PreflightError):
    """A --head-arg (or preset head_args) key or value the head does not take."""


# set from the stores, never by the user; `tokens` is what distinguishes tonly from sonly
_RESERVED = {"actor_dim", "object_dim", "num_classes", "tokens"}
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def _keywords(fn) -> tuple[dict[str, inspect.Parameter], bool]:
    """(keyword parameters of `fn` minus the reserved ones, whether it also takes **kw)."""
    sig = inspect.signature(fn).parameters.values()
    return ({p.name: p for p in sig if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _RESERVED},
            any(p.kind is p.VAR_KEYWORD for p in sig))


def head_parameters(head: str) -> dict[str, inspect.Parameter] | None:
    """The keywords `head` accepts (name -> parameter, annotation as written in the source); None
    for a head registered at run time whose factory only takes **kw (then nothing can be checked)."""
    if head not in HEADS:
        raise HeadArgError(f"unknown head {head!r}; valid heads: {', '.join(sorted(HEADS))}")
    params, var_kw = _keywords(HEADS[head])
    if not var_kw:
        return params
    try:
        callables = head_callables(head)
    except KeyError:
        return None
    params = {}
    for fn in callables:  # a builder first, then the class it forwards **kw to (the builder's defaults win)
        params = _keywords(fn)[0] | params
    return params


def _types(annotation) -> list[str] | None:
    """'int | None' -> ['int', 'None']; None for annotations this parser does not handle (then the
    value is read as JSON, else kept as a string)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else str(annotation).replace("<class '", "").replace("'>", "")
    parts = [t.strip() for t in text.split("|")]
    return parts if set(parts) <= {"int", "float", "bool", "str", "None"} else None


def _parse_value(head: str, key: str, text: str, types: list[str] | None):
    where = f"--head-arg {key}={text}"
    if types is None:  # an annotation without a simple type: JSON, else the string
        try:
            return json.loads(text)
        except ValueError:
            return text
    low = text.strip().lower()
    if "None" in types and low in ("none", "null"):
        return None
    if "bool" in types:
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    if "int" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "float" in types:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and math.isfinite(value):
            return value
    if "str" in types:
        return text
    expected = " or ".join("true/false/yes/no/1/0" if t == "bool" else t for t in types)
    raise HeadArgError(f"{where}: head {head} takes {key} as {expected}, got {text!r}")


def parse_head_args(head: str, pairs) -> dict:
    """`("num_layers=3", "temporal=no")` -> {"num_layers": 3, "temporal": False}, typed by `head`'s
    signature; an unknown key, a repeated key or a value of the wrong type is a `HeadArgError`."""
    params = head_parameters(head)
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise HeadArgError(f"--head-arg {pair}: expected KEY=VALUE")
        key, text = (s.strip() for s in pair.split("=", 1))
        if params is None:
            out[key] = _parse_value(head, key, text, None)
            continue
        if key not in params:
            raise HeadArgError(f"--head-arg {pair}: head {head} has no option {key!r}; "
                               f"its options: {', '.join(sorted(params)) or 'none'}")
        if key in out:
            raise HeadArgError(f"--head-arg {key} is given twice")
        out[key] = _parse_value(head, key, text, _types(params[key].annotation))
    return out


def check_head_kwargs(head: str, kwargs: dict) -> None:
    """Already-typed head keywords (a preset's head_args): known keys, values of the declared type."""
    params = head_parameters(head)
    for key, value in (kwargs.items() if params is not None else ()):
        if key not in params:
            raise HeadArgError(f"head {head} has no option {key!r} (head_args); "
                               f"its options: {', '.join(sorted(params)) or 'none'}")
        types = _types(params[key].annotation)
        if types is None:
            continue
        ok = ((value is None and "None" in types) or (isinstance(value, bool) and "bool" in types)
              or (isinstance(value, int) and not isinstance(value, bool) and ("int" in types or "float" in types))
              or (isinstance(value, float) and "float" in types) or (isinstance(value, str) and "str" in types))
        if not ok:
            raise HeadArgError(f"head {head} takes {key} as {' or '.join(types)}, got {value!r} (head_args)")
