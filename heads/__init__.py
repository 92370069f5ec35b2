"""Stage-2 heads, chosen by name.

`HEADS` maps a name to a factory taking flat keyword arguments. Every factory accepts
`actor_dim`, `object_dim` and `num_classes`, plus the head's own keywords, and returns a `Head`
(heads/protocol.py: the required forward and the optional capabilities, with `HeadBase` giving
their defaults). The factories are made from one table (`_BUILT_BY`: what each calls), which
`head_callables` also reads to type `--head-arg` values by their signatures
(pipelines/training/head_args.py). Imports are done on first use so that one head's optional dependency
never breaks another.
"""
from __future__ import annotations

import importlib
from typing import Callable

from .batch import HeadInput
from .protocol import Attention, CapabilityError, Head, HeadBase

__all__ = ["HEADS", "Attention", "CapabilityError", "Head", "HeadBase", "HeadInput", "build_head", "head_callables"]

# name -> (module of `heads`, the callable its factory calls, keyword defaults the factory adds
# (the caller's keywords win), and for a builder function that forwards **kw, the class it
# forwards them to).
_BUILT_BY: dict[str, tuple[str, str, dict, str | None]] = {
    "linear": ("linear", "LinearHead", {}, None),
    "stage": ("stage", "STAGEHead", {}, None),
    "acrn": ("acrn", "ACRNHead", {}, None),
    "acar": ("acar", "ACARHead", {}, None),
    "acar_rn": ("acar", "ACARHead", {"hr2o": "rn"}, None),
    "igmn": ("igmn", "IGMNHead", {}, None),
    "tonly": ("transformer", "build_tonly", {}, "TransformerRelationHead"),
    "sonly": ("transformer", "build_sonly", {}, "TransformerRelationHead"),
    "sto": ("sto", "STOHead", {}, None),
    "lfb": ("lfb", "LFBHead", {}, None),
}


def head_callables(name: str) -> list[Callable]:
    """What the factory of the built-in head `name` calls, imported: the callable, then the class a
    builder forwards **kw to (if any). KeyError for a name not built in (e.g. registered in HEADS
    at run time)."""
    module, fn, _, forwards = _BUILT_BY[name]
    mod = importlib.import_module(f"{__name__}.{module}")
    return [getattr(mod, fn)] + ([getattr(mod, forwards)] if forwards else [])


def _factory(name: str) -> Callable[..., Head]:
    defaults = _BUILT_BY[name][2]

    def build(**kw) -> Head:
        return head_callables(name)[0](**{**defaults, **kw})

    build.__name__ = build.__qualname__ = f"build_{name}"
    return build


HEADS: dict[str, Callable[..., Head]] = {name: _factory(name) for name in _BUILT_BY}


def build_head(name: str, **kwargs) -> Head:
    try:
        factory = HEADS[name]
    except KeyError:
        raise KeyError(f"unknown head {name!r}; valid heads: {', '.join(sorted(HEADS))}") from None
    head = factory(**kwargs)
    if not isinstance(head, Head):  # the callers use the declared contract only
        raise TypeError(f"head {name!r}: {type(head).__name__} does not satisfy heads.Head "
                        "(derive it from heads.HeadBase)")
    return head
