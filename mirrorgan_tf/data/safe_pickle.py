"""A restricted unpickler for the published AttnGAN/MirrorGAN metadata pickles.

`captions.pickle`, `filenames.pickle` and `class_info.pickle` hold only lists, dicts, strings,
numbers and numpy arrays, so loading them needs no code from the file. Plain `pickle.load` would
call any global a downloaded file names (`os.system` through `__reduce__`); `load_pickle` admits
only builtin containers and scalars and numpy's array/scalar reconstruction, and refuses
everything else before it runs.
"""

from __future__ import annotations

import builtins
import codecs
import importlib
import os
import pickle


class UnsafePickleError(ValueError):
    """A pickle names a global (class or function) that `load_pickle` does not admit."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # Python 3 writes bytes into protocol-2 pickles (numpy array data included) as
    # `_codecs.encode(text, "latin1")`; other codecs are refused to keep the surface small.
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode is only admitted with latin1, got {encoding!r}")
    return codecs.encode(text, "latin1", errors)


_BUILTINS = (
    "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
    "int", "float", "complex", "bool",
)  # fmt: skip
# numpy's own pickling of arrays, dtypes and scalars (numpy 1 and numpy 2 module names).
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


def _resolve_numpy(module: str, name: str):
    target_module, target_name = _NUMPY[(module, name)]
    try:
        return getattr(importlib.import_module(target_module), target_name)
    except ImportError:  # numpy < 2 has no numpy._core
        return getattr(importlib.import_module(target_module.replace("._core", ".core")), name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._path = path

    def find_class(self, module: str, name: str):
        # Globals are resolved from this table, never imported by name from the file.
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) in (("_codecs", "encode"), ("codecs", "encode")):
            return _latin1_encode
        if module == "numpy.dtypes" and name.endswith("DType"):
            # numpy 2 dtype classes (e.g. numpy.dtypes.Float32DType) are plain type objects.
            import numpy.dtypes

            value = getattr(numpy.dtypes, name, None)
            if isinstance(value, type):
                return value
        if (module, name) in _NUMPY:
            return _resolve_numpy(module, name)
        raise UnsafePickleError(
            f"{self._path}: refusing to load the global {module}.{name}; only lists, dicts, "
            "tuples, sets, strings, numbers and numpy arrays are admitted"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: persistent ids are not admitted ({pid!r})")


def load_pickle(path: str | os.PathLike, encoding: str = "latin1"):
    """Loads a data pickle, refusing any global other than containers, scalars and numpy arrays.

    Args:
        path: the pickle file (Python 2 or 3, any protocol).
        encoding: how Python 2 `str` objects are decoded; `"latin1"` (the default) reads the
            published Python 2 pickles and numpy arrays in them.

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: the file names a class or function outside the admitted set
            (nothing from the file has run).

    Example:
        >>> train, test, ixtoword, wordtoix = load_pickle("data/birds/captions.pickle")
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path, encoding).load()
