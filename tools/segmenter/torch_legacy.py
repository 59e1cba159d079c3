"""Reads a PyTorch file in the legacy (pre-1.6, non-zip) `torch.save` format without torch.

A whole-module save holds five pickles (magic number, protocol version, system info, the
module, the list of storage keys) followed by each storage's raw bytes. Unpickling runs code
named by the file, so this reader is restricted: it resolves only the globals in `ALLOWED`
(tensors, `OrderedDict`, and placeholder classes for the module types a caller names) and
refuses everything else. Modules come back as `Module` objects holding the pickled attributes,
`parameters` and `buffers` as float32/int64 numpy arrays, and `children`.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001

_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


class RefusedGlobal(pickle.UnpicklingError):
    """The file names a global outside the allowed set."""


@dataclass
class Module:
    """One `torch.nn.Module` as pickled: its class, plain attributes, tensors and children."""

    kind: str
    attrs: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)
    children: dict = field(default_factory=dict)

    def named_tensors(self, prefix=""):
        """Every parameter and buffer as `dotted.name -> array`, as torch's `state_dict()`."""
        out = {}
        for name, value in list(self.parameters.items()) + list(self.buffers.items()):
            if value is not None:
                out[prefix + name] = value
        for name, child in self.children.items():
            out.update(child.named_tensors(prefix + name + "."))
        return out


class _Storage:
    """A storage reference, resolved to an array once the raw bytes are read."""

    def __init__(self, dtype, key, size):
        self.dtype, self.key, self.size = dtype, key, size
        self.array = None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def resolve(self):
        base = self.storage.array
        item = base.itemsize
        if not self.size:
            return base[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, offset, size, stride, *_rest):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_rest):
    return data


class _Placeholder:
    """Stands in for a module class: unpickling only sets its `__dict__`."""

    _kind = ""


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, module_classes):
        super().__init__(file)
        self.module_classes = module_classes
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if f"{module}.{name}" in self.module_classes:
            return type(name, (_Placeholder,), {"_kind": f"{module}.{name}"})
        raise RefusedGlobal(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        kind = pid[0]
        if kind == "module":
            cls = pid[1]
            if not (isinstance(cls, type) and issubclass(cls, _Placeholder)):
                raise RefusedGlobal("module reference to a class that is not allowed")
            return cls
        if kind == "storage":
            storage_type, key, _location, size, view = pid[1:6]
            if storage_type not in _STORAGE_DTYPES or view is not None:
                raise RefusedGlobal(f"storage {storage_type!r} (view {view!r}) is not supported")
            if key not in self.storages:
                self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type], key, size)
            return self.storages[key]
        raise RefusedGlobal(f"persistent id {kind!r} is not allowed")


def _to_module(obj):
    if not isinstance(obj, _Placeholder):
        raise pickle.UnpicklingError(f"expected a module, found {type(obj).__name__}")
    state = dict(obj.__dict__)
    params = {k: (None if v is None else v.resolve()) for k, v in state.pop("_parameters", {}).items()}
    buffers = {k: (None if v is None else v.resolve()) for k, v in state.pop("_buffers", {}).items()}
    children = {k: _to_module(v) for k, v in state.pop("_modules", {}).items()}
    attrs = {k: v for k, v in state.items() if not k.startswith("_")}
    return Module(type(obj)._kind, attrs, params, buffers, children)


def load(path, module_classes):
    """The module saved at `path`; `module_classes` are the dotted class names allowed."""
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != MAGIC:
            raise ValueError("not a legacy torch.save file (magic number)")
        if pickle.load(f) != PROTOCOL:
            raise ValueError("unsupported legacy torch.save protocol version")
        info = pickle.load(f)
        if not info.get("little_endian", False):
            raise ValueError("big-endian torch files are not supported")
        unpickler = _Unpickler(f, set(module_classes))
        root = unpickler.load()
        keys = pickle.load(f)
        for key in keys:
            storage = unpickler.storages.get(key)
            if storage is None:
                raise ValueError(f"storage {key} is not referenced by the module")
            (count,) = struct.unpack("<q", f.read(8))
            if count != storage.size:
                raise ValueError(f"storage {key}: {count} elements, expected {storage.size}")
            raw = f.read(count * np.dtype(storage.dtype).itemsize)
            if len(raw) != count * np.dtype(storage.dtype).itemsize:
                raise ValueError(f"storage {key} is truncated")
            storage.array = np.frombuffer(raw, dtype=storage.dtype)
        if f.read(1):
            raise ValueError("trailing bytes after the last storage")
    missing = [k for k, s in unpickler.storages.items() if s.array is None]
    if missing:
        raise ValueError(f"storages without data: {missing[:3]}")
    return _to_module(root)
