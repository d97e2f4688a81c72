"""PyTorch's checkpoint files (`torch.save`'s zip of a pickle and raw storages), read and written
without torch and without running pickled code.

Reading admits only the globals a caller names: each maps to an inert stand-in (a `PickledObject`
attribute bag for a config class, `str` for an enum, `set`, `OrderedDict`), and any other global
stops the load with `UnsafeCheckpointError` before anything it names runs. Tensors come back as
numpy arrays that view the bytes read from the file (one copy of the weights in memory).

Writing emits pickle protocol 2 opcodes directly, so a checkpoint can name classes of packages that
are not installed here (the reader that loads it imports them).
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from lora_hyper.errors import CorruptFileError

# torch's legacy storage classes, as checkpoints name them, and the dtypes they hold.
STORAGES = {"FloatStorage": np.float32, "LongStorage": np.int64}
_STORAGE_NAMES = {np.dtype(v): k for k, v in STORAGES.items()}


class UnsafeCheckpointError(ValueError):
  """The pickle names a global outside the allowed set: it could run code, so nothing is loaded."""


class PickledObject:
  """An instance of a class that is not imported here: its name and the state the pickle gave it."""

  module: str = ""
  name: str = ""

  def __init__(self, state: Mapping[str, Any] | None = None):
    self.__dict__.update(state or {})

  @property
  def state(self) -> dict[str, Any]:
    return dict(self.__dict__)

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, dict):
      raise CorruptFileError(f"{self.module}.{self.name} holds a {type(state).__name__} state, not a dict")
    self.__dict__.update(state)

  def __repr__(self) -> str:
    return f"{self.name}({self.__dict__})"


def record_class(qualified: str) -> type[PickledObject]:
  """A `PickledObject` subclass that stands in for (and writes as) the class named `module.Name`."""
  module, name = qualified.rsplit(".", 1)
  return type(name, (PickledObject,), {"module": module, "name": name})


class _Storage:
  def __init__(self, dtype: type):
    self.dtype = dtype


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *unused: Any) -> np.ndarray:
  """torch._utils._rebuild_tensor_v2 on a numpy storage: a view, bounds checked (a corrupt file
  must not read past its storage)."""
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
    raise CorruptFileError(f"a tensor has size {size}, stride {stride}, offset {offset}: not a valid layout")
  if math.prod(size) == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise CorruptFileError(f"a tensor of size {size} at offset {offset} reaches element {last} of a storage of "
                           f"{storage.size}: the file is truncated or corrupt")
  return np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride],
                                         writeable=False)


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, archive: zipfile.ZipFile, root: str, allowed: Mapping[str, Any], source: str):
    super().__init__(file)
    self._archive, self._root, self._allowed, self._source = archive, root, allowed, source

  def find_class(self, module: str, name: str) -> Any:
    qualified = f"{'builtins' if module == '__builtin__' else module}.{name}"
    if qualified not in self._allowed:
      raise UnsafeCheckpointError(
          f"{self._source!r} names the global {qualified!r}, which is not one this format holds; refusing to load it "
          f"(a pickle's globals can run code). Allowed: {sorted(self._allowed)}")
    return self._allowed[qualified]

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
      raise CorruptFileError(f"{self._source!r} holds a persistent id {pid!r} that is not a torch storage")
    _, storage, key, _location, numel = pid  # the location (e.g. cuda:0) does not matter on the host
    name = f"{self._root}/data/{key}"
    try:
      raw = self._archive.read(name)
    except KeyError:
      raise CorruptFileError(f"{self._source!r} has no storage record {name!r}") from None
    itemsize = np.dtype(storage.dtype).itemsize
    if len(raw) < numel * itemsize:
      raise CorruptFileError(f"{self._source!r}: storage {key!r} holds {len(raw)} bytes, {numel} elements need "
                             f"{numel * itemsize}")
    return np.frombuffer(raw, np.dtype(storage.dtype).newbyteorder("<"), count=numel)


def read(path: str | os.PathLike, records: Mapping[str, Callable | type]) -> Any:
  """The object a `torch.save` zip holds, tensors as read-only numpy arrays. `records` are the other
  globals allowed, by qualified name, each with its stand-in (e.g. `record_class(name)`, `str`)."""
  source = os.fspath(path)
  allowed = {"collections.OrderedDict": collections.OrderedDict, "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
             "builtins.set": set, **{f"torch.{k}": _Storage(v) for k, v in STORAGES.items()}, **records}
  try:
    archive = zipfile.ZipFile(source)
  except zipfile.BadZipFile:
    raise CorruptFileError(f"{source!r} is not a torch zip checkpoint (torch.save's format since torch 1.6): it "
                           "is truncated, corrupt or in the legacy format") from None
  with archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise CorruptFileError(f"{source!r} has {len(pickles)} '<name>/data.pkl' records; a torch checkpoint has one")
    root = pickles[0].split("/")[0]
    byteorder = f"{root}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise CorruptFileError(f"{source!r} is big-endian; only little-endian checkpoints are read")
    try:
      return _Unpickler(io.BytesIO(archive.read(pickles[0])), archive, root, allowed, source).load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError) as e:
      raise CorruptFileError(f"{source!r}: its pickle is damaged ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------- writing


class Reduce:
  """An object written as `callable(*args)` (pickle's REDUCE), the callable named `module.Name`:
  e.g. an enum member, `Reduce("peft.utils.peft_types.PeftType", ("LORA",))`."""

  def __init__(self, qualified: str, args: tuple):
    self.qualified, self.args = qualified, args


class _GlobalRef:
  """A bare global in the pickle (a storage class inside a persistent id)."""

  def __init__(self, qualified: str):
    self.qualified = qualified


class _Writer:
  """Pickle protocol 2 opcodes for the types a torch checkpoint of configs and tensors holds."""

  def __init__(self):
    self.out = io.BytesIO()
    self.storages: list[tuple[str, np.ndarray]] = []
    self.out.write(pickle.PROTO + b"\x02")

  def global_(self, qualified: str) -> None:
    module, name = qualified.rsplit(".", 1)
    self.out.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())

  def tuple_(self, items) -> None:
    self.out.write(pickle.MARK)
    for item in items:
      self.write(item)
    self.out.write(pickle.TUPLE)

  def items(self, pairs) -> None:
    self.out.write(pickle.MARK)
    for key, value in pairs:
      self.write(key)
      self.write(value)
    self.out.write(pickle.SETITEMS)

  def tensor(self, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    if array.dtype not in _STORAGE_NAMES:
      raise ValueError(f"cannot write a {array.dtype} tensor; writable: {sorted(map(str, _STORAGE_NAMES))}")
    key = str(len(self.storages))
    self.storages.append((key, array))
    self.global_("torch._utils._rebuild_tensor_v2")
    self.out.write(pickle.MARK)
    self.tuple_(["storage", _GlobalRef(f"torch.{_STORAGE_NAMES[array.dtype]}"), key, "cpu", array.size])
    self.out.write(pickle.BINPERSID)
    self.write(0)
    self.tuple_(array.shape)
    self.tuple_([int(np.prod(array.shape[i + 1:])) for i in range(array.ndim)])
    self.write(False)
    self.write(Reduce("collections.OrderedDict", ()))
    self.out.write(pickle.TUPLE + pickle.REDUCE)

  def write(self, obj: Any) -> None:
    out = self.out
    if obj is None:
      out.write(pickle.NONE)
    elif isinstance(obj, bool):
      out.write(pickle.NEWTRUE if obj else pickle.NEWFALSE)
    elif isinstance(obj, (int, np.integer)):
      obj = int(obj)
      if -2 ** 31 <= obj < 2 ** 31:
        out.write(pickle.BININT + struct.pack("<i", obj))
      else:
        data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        out.write(pickle.LONG1 + bytes([len(data)]) + data)
    elif isinstance(obj, (float, np.floating)):
      out.write(pickle.BINFLOAT + struct.pack(">d", float(obj)))
    elif isinstance(obj, str):
      data = obj.encode("utf-8")
      out.write(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)
    elif isinstance(obj, _GlobalRef):
      self.global_(obj.qualified)
    elif isinstance(obj, np.ndarray):
      self.tensor(obj)
    elif isinstance(obj, tuple):
      self.tuple_(obj) if obj else out.write(pickle.EMPTY_TUPLE)
    elif isinstance(obj, list):
      out.write(pickle.EMPTY_LIST + pickle.MARK)
      for item in obj:
        self.write(item)
      out.write(pickle.APPENDS)
    elif isinstance(obj, (set, frozenset)):
      self.write(Reduce("builtins.set", (sorted(obj),)))
    elif isinstance(obj, Reduce):
      self.global_(obj.qualified)
      self.write(tuple(obj.args))
      out.write(pickle.REDUCE)
    elif isinstance(obj, PickledObject):  # a dataclass: cls.__new__(cls), then its fields as state
      self.global_(f"{obj.module}.{obj.name}")
      out.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
      self.write(obj.state)
      out.write(pickle.BUILD)
    elif isinstance(obj, collections.OrderedDict):
      self.write(Reduce("collections.OrderedDict", ()))
      self.items(obj.items())
    elif isinstance(obj, dict):
      out.write(pickle.EMPTY_DICT)
      self.items(obj.items())
    else:
      raise TypeError(f"cannot write a {type(obj).__name__} into a torch checkpoint")


def write(path: str | os.PathLike, obj: Any, *, archive_name: str | None = None) -> None:
  """Writes `obj` (dicts, OrderedDicts, numpy tensors (float32, int64), str/int/float/bool/None,
  tuples, lists, sets, `PickledObject`s and `Reduce`s) as `torch.save` would, for `torch.load`.
  Tensors are stored one at a time, so writing holds one extra tensor at most."""
  writer = _Writer()
  writer.write(obj)
  writer.out.write(pickle.STOP)
  root = archive_name or os.path.splitext(os.path.basename(os.fspath(path)))[0]
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr(f"{root}/data.pkl", writer.out.getvalue())
    archive.writestr(f"{root}/byteorder", "little")
    for key, array in writer.storages:
      archive.writestr(f"{root}/data/{key}", array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    archive.writestr(f"{root}/version", "3\n")
    archive.writestr(f"{root}/.data/serialization_id", "0" * 40)
