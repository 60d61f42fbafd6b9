"""Read `torch.save` state dicts as numpy arrays without torch and without running code from the file.

A torch (>= 1.6) checkpoint is a zip archive: `<root>/data.pkl` pickles the object tree, each tensor's bytes
live in `<root>/data/<key>`, `<root>/byteorder` says the byte order. The pickle names a few torch globals
(`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, `collections.OrderedDict`, ...); the unpickler
below resolves only those, to numpy stand-ins, and refuses every other global, so nothing in the file runs.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


class UnsafeCheckpointError(ValueError):
    """The file is not a torch zip checkpoint this reader accepts (bad format or a global outside the allow-list)."""


# torch storage class name -> numpy dtype of its elements
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32), "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
}


class _StorageType:
    """Stands for a `torch.<X>Storage` class inside the pickle: only its element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _view(storage: np.ndarray, offset: int, size, stride) -> np.ndarray:
    """A copy of the strided view `storage[offset + sum(i_k * stride_k)]`, bounds-checked."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise UnsafeCheckpointError(f"bad tensor geometry: offset {offset}, size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise UnsafeCheckpointError(f"tensor (offset {offset}, size {size}, stride {stride}) reads past the end "
                                    f"of its storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, tuple(s * storage.itemsize for s in stride),
                                           writeable=False)
    return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
    if not isinstance(storage, np.ndarray):
        raise UnsafeCheckpointError("a tensor rebuild got something other than a storage")
    return _view(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, *_ignored):
    # _rebuild_parameter(data, requires_grad, backward_hooks): an nn.Parameter is its data here.
    if not isinstance(data, np.ndarray):
        raise UnsafeCheckpointError("a parameter rebuild got something other than a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage, where: str):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._where = where

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._where}: the pickle references {module}.{name}, which is not allowed in a tensor state "
                f"dict; refusing to load it (allowed: {sorted(f'{m}.{n}' for m, n in _ALLOWED)})") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise UnsafeCheckpointError(f"{self._where}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        return self._load_storage(key, storage_type.dtype, int(numel))


def _check_tree(obj: Any, where: str) -> None:
    """Only containers, strings, numbers and arrays may come out (BUILD could have set odd state on objects)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_tree(k, where)
            _check_tree(v, where)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_tree(v, where)
    elif not isinstance(obj, (np.ndarray, str, bytes, int, float, bool, type(None))):
        raise UnsafeCheckpointError(f"{where}: unexpected object of type {type(obj).__name__} in the checkpoint")


def load(path: str | os.PathLike) -> Any:
    """Loads a `torch.save` file (zip format) with every tensor as a numpy array (bfloat16 via ml_dtypes).

    Tensors that shared a storage in torch come back as separate arrays with the same values.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafeCheckpointError(f"{path}: not a torch zip checkpoint (torch < 1.6 legacy files and plain "
                                    "pickles are not read; re-save with torch.save or convert to safetensors)")
    with zipfile.ZipFile(path) as zf:
        pickles = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UnsafeCheckpointError(f"{path}: expected one <root>/data.pkl record, found {pickles}")
        root = pickles[0][: -len("data.pkl")]
        names = set(zf.namelist())
        byteorder = zf.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise UnsafeCheckpointError(f"{path}: unknown byteorder {byteorder!r}")
        storages: dict[str, np.ndarray] = {}

        def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            record = f"{root}data/{key}"
            if key not in storages:
                if record not in names:
                    raise UnsafeCheckpointError(f"{path}: storage record {record!r} is missing")
                raw = zf.read(record)
                if len(raw) < numel * dtype.itemsize:
                    raise UnsafeCheckpointError(f"{path}: storage {record!r} holds {len(raw)} bytes, "
                                                f"expected {numel} x {dtype.itemsize}")
                arr = np.frombuffer(raw, dtype=dtype, count=numel)
                storages[key] = arr.byteswap() if byteorder != sys.byteorder else arr
            elif storages[key].dtype != dtype or storages[key].size != numel:
                raise UnsafeCheckpointError(f"{path}: storage {record!r} is referenced with two element types or sizes")
            return storages[key]

        try:
            obj = _RestrictedUnpickler(zf.read(pickles[0]), load_storage, str(path)).load()
        except UnsafeCheckpointError:
            raise
        except Exception as e:  # malformed pickles surface as many exception types
            raise UnsafeCheckpointError(f"{path}: could not read the pickled state dict ({type(e).__name__}: {e})")
    _check_tree(obj, str(path))
    return obj
