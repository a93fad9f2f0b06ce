"""Loading pickles without running code: an unpickler that resolves only an allowlist of globals.

A pickle names the callables that rebuild its objects, and `pickle.load` calls whatever it names
(`os.system`, `pathlib.Path.touch`, ...). The unpickler here hands out only what numpy arrays, numpy
dtypes and scalars, scipy.sparse matrices and chumpy arrays (as inert stand-ins) need, under the module
names that Python 2 and 3, numpy 1 and 2 and old and new scipy write; every other global is refused.
`.npz` files are read with `allow_pickle=False`, their object arrays through the same unpickler.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from metatune.errors import MetatuneError


class ChumpyStandIn:
    """Stands in for any chumpy class: keeps the pickled state and does nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}


def _numpy_core(submodule: str) -> Any:
    """numpy 2 calls its core `numpy._core`; `numpy.core` there is a shim that warns on every access."""
    import importlib
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy's array constructor accepts any class and calls its __new__; only a plain ndarray is allowed
    if cls is not np.ndarray:
        raise MetatuneError(f"refusing to rebuild an array of class {cls!r}: only numpy.ndarray is allowed")
    return _numpy_core("multiarray")._reconstruct(cls, shape, dtype)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # protocols 0-2 write bytes as _codecs.encode(text, "latin1"); other codecs (zlib, base64...) are not needed
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise MetatuneError(f"refusing _codecs.encode with encoding {encoding!r}: only latin1 is allowed")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # protocols 0-2 write b"" as bytes(); bytes(n) with a huge n would only allocate memory
    if args:
        raise MetatuneError("refusing bytes() with arguments: only the empty bytes() is allowed")
    return b""


def _sparse_classes() -> dict[str, type]:
    import scipy.sparse as sp
    names = [f"{fmt}_{kind}" for fmt in ("csc", "csr", "coo", "bsr", "dia", "lil")
             for kind in ("matrix", "array")]
    return {name: getattr(sp, name) for name in names if hasattr(sp, name)}


def _safe_classes() -> tuple[type, ...]:
    """Classes `copyreg._reconstructor` may build (protocols 0 and 1 rebuild plain objects through it)."""
    return (ChumpyStandIn, *_sparse_classes().values())


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor(cls, base, state) calls base.__new__(cls, state) and base.__init__: safe only for
    # an allowlisted class on the plain `object` base (how protocols 0/1 pickle ordinary instances)
    if not (isinstance(cls, type) and issubclass(cls, _safe_classes())) or base is not object:
        raise MetatuneError(f"refusing copyreg._reconstructor({cls!r}, {base!r}): only sparse matrices and "
                            "chumpy stand-ins on the object base are allowed")
    return object.__new__(cls)  # what copyreg._reconstructor does for the object base (state is unused)


def _allowlist() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copy_reg", "_reconstructor"): _reconstructor,  # Python 2's name
        ("builtins", "object"): object,
        ("__builtin__", "object"): object,
        ("builtins", "set"): set,  # chumpy objects keep a set (_dirty_vars); protocols < 4 write set(list)
        ("__builtin__", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): _latin1_bytes,
        ("builtins", "bytes"): _empty_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1 writes the first, numpy 2 the second
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    for name, cls in _sparse_classes().items():
        fmt = name.split("_")[0]
        # old scipy pickles name the public format module (scipy.sparse.csc), new ones the private one
        for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[(module, name)] = cls
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allowlisted globals and maps every chumpy class to `ChumpyStandIn`."""

    def __init__(self, file: IO[bytes], what: str, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.what = what
        self.allowed = _allowlist()

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStandIn
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise MetatuneError(f"refusing to unpickle {module}.{name} from {self.what}: only numpy, "
                                "scipy.sparse and chumpy arrays are allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise MetatuneError(f"refusing a persistent id in {self.what}: plain pickles only")


def safe_load(fh_or_path: str | os.PathLike | IO[bytes], what: str | None = None,
              encoding: str = "latin1") -> Any:
    """The object in a pickle (a path or a binary file), built from allowlisted globals only; `what` names it
    in errors (default: the path). Refused globals and unreadable pickles raise MetatuneError."""
    if isinstance(fh_or_path, (str, os.PathLike)):
        what = what or str(fh_or_path)
        try:
            with open(fh_or_path, "rb") as fh:
                return _load(fh, what, encoding)
        except OSError as err:
            raise MetatuneError(f"cannot read {what}: {err.strerror or err}") from None
    return _load(fh_or_path, what or "a pickle", encoding)


def _load(fh: IO[bytes], what: str, encoding: str) -> Any:
    try:
        return SafeUnpickler(fh, what, encoding).load()
    except MetatuneError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt stream fails in many ways: name the file instead
        raise MetatuneError(f"cannot read {what}: not a readable pickle ({type(err).__name__}: {err})") from None


def load_npz(path: str | Path, what: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an `.npz`: plain ones read with allow_pickle=False, object arrays (pickled inside the
    archive) through `safe_load`."""
    path = Path(path)
    what = what or str(path)
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z, zipfile.ZipFile(path) as zf:
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as err:  # "Object arrays cannot be loaded when allow_pickle=False"
                    if "allow_pickle" not in str(err):
                        raise
                    out[key] = _object_member(zf, key, f"field {key!r} of {what}")
    except MetatuneError:
        raise
    except Exception as err:  # noqa: BLE001 - a broken zip or .npy fails in many ways: name the file instead
        raise MetatuneError(f"cannot read {what}: {type(err).__name__}: {err}") from None
    return out


def _object_member(zf: zipfile.ZipFile, key: str, what: str) -> np.ndarray:
    """An object array of an npz: the .npy header, then a pickle of the array (numpy's own layout)."""
    with zf.open(key + ".npy") as raw:
        fh = io.BytesIO(raw.read())
    version = np.lib.format.read_magic(fh)
    readers: dict[tuple[int, int], Callable] = {(1, 0): np.lib.format.read_array_header_1_0,
                                                 (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise MetatuneError(f"{what}: unsupported .npy format version {version}")
    readers[version](fh)  # shape and dtype are in the pickled array itself
    arr = safe_load(fh, what, encoding="latin1")
    if not isinstance(arr, np.ndarray):
        raise MetatuneError(f"{what} holds a {type(arr).__name__}, not an array")
    return arr
