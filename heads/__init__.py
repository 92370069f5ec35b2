"""Stage-2 heads, chosen by name.

`HEADS` maps a name to a factory taking flat keyword arguments. Every factory accepts
`actor_dim`, `object_dim` and `num_classes`, plus the head's own keywords. Imports are done inside
the factories so that one head's optional dependency never breaks another.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .batch import HeadInput

__all__ = ["HEADS", "HeadInput", "build_head"]


def _linear(**kw) -> nn.Module:
    from .linear import LinearHead

    return LinearHead(**kw)


def _stage(**kw) -> nn.Module:
    from .stage import STAGEHead

    return STAGEHead(**kw)


def _acrn(**kw) -> nn.Module:
    from .acrn import ACRNHead

    return ACRNHead(**kw)


def _acar(**kw) -> nn.Module:
    from .acar import ACARHead

    return ACARHead(**kw)


def _acar_rn(**kw) -> nn.Module:
    from .acar import ACARHead

    return ACARHead(**{"hr2o": "rn", **kw})


def _igmn(**kw) -> nn.Module:
    from .igmn import IGMNHead

    return IGMNHead(**kw)


def _tonly(**kw) -> nn.Module:
    from .transformer import build_tonly

    return build_tonly(**kw)


def _sonly(**kw) -> nn.Module:
    from .transformer import build_sonly

    return build_sonly(**kw)


def _sto(**kw) -> nn.Module:
    from .sto import STOHead

    return STOHead(**kw)


def _lfb(**kw) -> nn.Module:
    from .lfb import LFBHead

    return LFBHead(**kw)


HEADS: dict[str, Callable[..., nn.Module]] = {
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


def build_head(name: str, **kwargs) -> nn.Module:
    try:
        factory = HEADS[name]
    except KeyError:
        raise KeyError(f"unknown head {name!r}; valid heads: {', '.join(sorted(HEADS))}") from None
    return factory(**kwargs)
