"""Stage-2 heads, chosen by name.

`HEADS` maps a name to a factory taking flat keyword arguments. Every factory accepts
`actor_dim`, `object_dim` and `num_classes`, plus the head's own keywords, and returns a `Head`
(heads/protocol.py: the required forward and the optional capabilities, with `HeadBase` giving
their defaults). Imports are done inside the factories so that one head's optional dependency
never breaks another.
"""
from __future__ import annotations

from typing import Callable

from .batch import HeadInput
from .protocol import Attention, CapabilityError, Head, HeadBase

__all__ = ["HEADS", "Attention", "CapabilityError", "Head", "HeadBase", "HeadInput", "build_head"]


def _linear(**kw) -> Head:
    from .linear import LinearHead

    return LinearHead(**kw)


def _stage(**kw) -> Head:
    from .stage import STAGEHead

    return STAGEHead(**kw)


def _acrn(**kw) -> Head:
    from .acrn import ACRNHead

    return ACRNHead(**kw)


def _acar(**kw) -> Head:
    from .acar import ACARHead

    return ACARHead(**kw)


def _acar_rn(**kw) -> Head:
    from .acar import ACARHead

    return ACARHead(**{"hr2o": "rn", **kw})


def _igmn(**kw) -> Head:
    from .igmn import IGMNHead

    return IGMNHead(**kw)


def _tonly(**kw) -> Head:
    from .transformer import build_tonly

    return build_tonly(**kw)


def _sonly(**kw) -> Head:
    from .transformer import build_sonly

    return build_sonly(**kw)


def _sto(**kw) -> Head:
    from .sto import STOHead

    return STOHead(**kw)


def _lfb(**kw) -> Head:
    from .lfb import LFBHead

    return LFBHead(**kw)


HEADS: dict[str, Callable[..., Head]] = {
    "linear": _linear,
    "stage": _stage,
    "acrn": _acrn,
    "acar": _acar,
    "acar_rn": _acar_rn,
    "igmn": _igmn,
    "tonly": _tonly,
    "sonly": _sonly,
    "sto": _sto,
    "lfb": _lfb,
}


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
