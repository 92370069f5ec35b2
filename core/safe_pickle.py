"""Restricted unpickling for files that come from other people.

A pickle is a program: loading one can call any importable function (`os.system`, `builtins.exec`)
with any arguments. Proposal pickles (MMAction2), Caffe2 / Detectron / detectron2 `.pkl` weights and
GT pickles only ever need numpy arrays and plain containers, so `load_pickle` admits exactly the
globals those formats are built from and refuses every other one *before* it is called: the
message names the file and the global the pickle would have built, and nothing in the file runs.
`trust=True` (the CLI's `--trust-pickle`) is the user vouching for a file; it loads with plain
pickle.

What the formats carry (checked against the writers): MMAction2 proposal pickles are a dict of
`"<video>,<ts>"` -> float ndarray; Caffe2 / Detectron `.pkl` weights are `{"blobs": {name: ndarray},
...}` (written under Python 2, read with encoding="latin1"); detectron2 model-zoo conversions are
`{"model": {name: ndarray}, "__author__": str, "matching_heuristics": bool}`. A numpy array pickles
as `numpy.(_)core.multiarray._reconstruct(numpy.ndarray, ...)` plus a `numpy.dtype` and, under
protocol 2 in Python 3, its raw bytes as `_codecs.encode(str, "latin1")` (protocol 5: as
`numpy.(_)core.numeric._frombuffer(bytes, dtype, shape, order)`); a numpy scalar as
`numpy.(_)core.multiarray.scalar(dtype, bytes)`. None of these can run code.
"""
from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
import re
from pathlib import Path

from stagecache.core.errors import UserError

__all__ = ["UnsafePickleError", "SAFE_GLOBALS", "load_pickle", "loads_pickle", "torch_load"]

TRUST_HINT = "load it only if you trust the file, with --trust-pickle"

# fully qualified names, after Python 2 -> 3 renaming (`__builtin__` -> `builtins`, ...)
SAFE_GLOBALS: frozenset[str] = frozenset({
    # numpy arrays, dtypes and scalars (numpy 1.x module path and numpy 2.x `_core`)
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
    # protocol 5: contiguous arrays pickle as `_frombuffer(bytes, dtype, shape, order)`
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    # Python 3 bytes pickled at protocol < 3 (how numpy array data is stored in such pickles)
    "_codecs.encode",
    # containers and plain values
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset",
    "builtins.str", "builtins.bytes", "builtins.bytearray", "builtins.int", "builtins.float",
    "builtins.complex", "builtins.bool", "collections.OrderedDict",
})


def _import(module: str):
    """`module`, with numpy's core package under the name this numpy has: numpy 2 renamed
    `numpy.core` to `numpy._core` (the old name warns), numpy 1.x has only `numpy.core`."""
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            rest = module[len(prefix):]
            try:
                return importlib.import_module("numpy._core." + rest)
            except ImportError:
                return importlib.import_module("numpy.core." + rest)
    return importlib.import_module(module)


class UnsafePickleError(UserError):
    """A pickle that would build a global outside the allow-list; nothing was executed."""


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 spelling of a global a protocol < 3 pickle names (what plain pickle imports)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, source: str, allowed: frozenset[str], encoding: str):
        super().__init__(file, encoding=encoding)
        self._source = source
        self._allowed = allowed

    def find_class(self, module: str, name: str):
        # Python 3 names are never keys of the Python 2 mapping, so renaming is safe at any protocol
        module, name = _python3_name(module, name)
        qualified = f"{module}.{name}"
        if qualified not in self._allowed:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle a {qualified} (not plain data: loading it "
                f"could run code); {TRUST_HINT}")
        # the name is checked above and the Python 3 names are final: no second renaming
        return getattr(_import(module), name)


def _load(file, *, source: str, trust: bool, encoding: str, extra_allowed: frozenset[str]) -> object:
    try:
        if trust:
            return pickle.load(file, encoding=encoding)
        return _RestrictedUnpickler(file, source=source, allowed=SAFE_GLOBALS | extra_allowed,
                                    encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, UnicodeDecodeError) as e:  # truncated / corrupt / not a pickle
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e


def load_pickle(path, *, trust: bool = False, encoding: str = "ASCII",
                extra_allowed: frozenset[str] = frozenset()) -> object:
    """Load the pickle at `path`, admitting only plain data (see the module docstring).

    `extra_allowed`: further fully qualified global names a particular format needs.
    `trust=True`: plain `pickle.load` for a file the user vouches for.
    Raises `UnsafePickleError` (a `UserError`) naming the file for a refused global or a file
    that is not a readable pickle; `OSError` from opening the file propagates.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _load(f, source=str(path), trust=trust, encoding=encoding,
                     extra_allowed=frozenset(extra_allowed))


def loads_pickle(data: bytes, *, source: str, trust: bool = False, encoding: str = "ASCII",
                 extra_allowed: frozenset[str] = frozenset()) -> object:
    """`load_pickle` for bytes already in memory (e.g. an array inside an `.npz`); `source`
    names where they came from in the messages."""
    return _load(io.BytesIO(data), source=source, trust=trust, encoding=encoding,
                 extra_allowed=frozenset(extra_allowed))


def _numpy_globals() -> list:
    """The numpy objects a torch file holding numpy arrays / scalars names (`torch_load`)."""
    import numpy as np

    multiarray, numeric = _import("numpy._core.multiarray"), _import("numpy._core.numeric")
    classes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype, what torch checks
    dtypes = [getattr(classes, n) for n in getattr(classes, "__all__", ()) if n.endswith("DType")]
    return [multiarray._reconstruct, multiarray.scalar, numeric._frombuffer, np.ndarray, np.dtype, *dtypes]


# torch's wordings of a refused global: "Unsupported global: GLOBAL tp.Foo was not an allowed global
# by default" (a class), and since torch 2.6 also "Trying to load unsupported GLOBAL posix.system whose
# module posix is blocked" (a function of a blocked module, e.g. os.system); both in torch 2.14.
_REFUSED_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)")


def _last_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def torch_load(path, *, map_location="cpu", trust: bool = False, hint: str = TRUST_HINT):
    """`torch.load` with `weights_only=True` (tensors, plain containers and values, and numpy arrays,
    dtypes and scalars, which older checkpoints hold); a file needing anything else raises
    `UnsafePickleError` naming the file and the global (then `hint`), unless `trust` (then plain
    unpickling)."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError) as e:  # a truncated zip, an empty file
        raise UnsafePickleError(f"{path}: not a readable torch file ({_last_line(e)})") from None
    except pickle.UnpicklingError as e:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False)
        found = _REFUSED_GLOBAL.search(str(e))
        if found is None:  # not a refused global: a corrupt file
            raise UnsafePickleError(f"{path}: not a readable torch file ({_last_line(e)})") from None
        name = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"  # torch drops it
        raise UnsafePickleError(f"{path}: refusing to unpickle a {name} (not plain data: loading it "
                                f"could run code); {hint}") from None
