"""Keras' own file formats at the disk's speed, with Keras' own layout rules.

Keras 3 reads the weights member of a ``.keras`` zip through Python file objects
(``zipfile`` → ``io.BytesIO`` → h5py), about 0.1 GB/s, after initializing every
variable with its random initializer only to overwrite it; its writers copy
every value once more on the way. kerasave reads and writes the same files
another way, and gets the same results:

- **Building** (``uninitialized``): a model is built from its config with
  variables that have a TensorFlow handle but no memory, and run no
  initializer until something is assigned to them.
- **Reading**: Keras' own traversal (``saving_lib._load_state``, or the legacy
  HDF5 loader via ``legacy_reads``) decides which dataset goes to which
  variable. Each dataset's bytes (contiguous and uncompressed, as Keras writes
  them) come from a ``Source``: one ``preadv`` into 64-byte-aligned memory that
  TensorFlow adopts on ``assign`` (DLPack), or, to verify kerasave's own
  temporaries, read-only views of the mapped file that ``recorded`` keeps
  instead of assigning. Loads of h5 weights into a user's model run the
  traversal in a ``keras.StatelessScope``, so nothing changes until all of it
  was read (``read_weights``).
- **Verifying**: ``twin_keras``/``Twins`` give a model built from the file's
  config with the file's values recorded against its variables, without
  copying them (see ``kerasave._verify.compare_whole_models``).
- **Writing**: ``.keras`` archives are written with the HDF5 weights in place
  (``save_keras``), and every writer gets views of the variables, not copies
  (``write_weights``, ``legacy_writes``).

Anything this module does not recognise (a compressed member, assets, sharded
or npz weights, chunked or filtered datasets, a Keras version whose internals
differ) raises ``Unsupported`` or falls back to Keras' own calls: same result,
slower.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import json
import math
import mmap
import os
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from kerasave._errors import ArchitectureMismatchError, CorruptArtifactError, KerasaveError
from kerasave._internals import Unsupported, on, patching
from kerasave._verify import fixed_config

try:  # ISA-L's CRC-32 runs at ~10 GB/s, zlib's at ~1 GB/s; both give the zip's CRC-32
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover
    from zlib import crc32 as _crc32

__all__ = ["TWINS", "Recorded", "Source", "Twins", "Unsupported", "Window", "build_deferred",
           "initialize_rest", "legacy_reads", "legacy_writes", "load_keras", "map_weights",
           "may_map", "member_span", "private_files", "read_weights", "recorded",
           "save_keras", "twin_keras", "twin_variables", "uninitialized", "variable_view",
           "write_weights"]

_WEIGHTS = "model.weights.h5"
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")


def member_span(path: Path, zf: zipfile.ZipFile, name: str) -> tuple[int, int]:
    """Where the bytes of a stored (uncompressed) zip member start, and how many."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise Unsupported(f"{name} is compressed")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise CorruptArtifactError(f"truncated zip header of {name}", path=path)
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != b"PK\x03\x04":
        raise CorruptArtifactError(f"bad zip header for {name}", path=path)
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.file_size > path.stat().st_size:
        raise CorruptArtifactError(f"{name} runs past the end of the archive", path=path)
    return start, info.file_size


class Window(io.RawIOBase):
    """A read-only file object over ``size`` bytes of ``fd`` from ``start``."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self._size - self._pos))
        if want == 0:
            return 0
        got = os.preadv(self._fd, [view[:want]], self._start + self._pos)
        self._pos += got
        return got


class _Loaded(np.ndarray):
    """An array read from a file that TensorFlow may adopt without copying it.

    ``variable.assign(loaded)`` hands TensorFlow this memory through DLPack, and
    the variable keeps it: one copy from the page cache, none after. Nothing else
    holds a reference to it.
    """

    def __tf_tensor__(self, dtype: Any = None, name: Any = None) -> Any:
        import tensorflow as tf

        base = self.view(np.ndarray)
        if (not on("dlpack_adopt")
                or (dtype is not None and tf.as_dtype(dtype) != tf.as_dtype(base.dtype))
                or not base.flags.c_contiguous or base.ctypes.data % _ALIGN
                or base.dtype.kind not in "fiu"):
            return tf.convert_to_tensor(base, dtype=dtype, name=name)
        return tf.experimental.dlpack.from_dlpack(base.__dlpack__())


_ALIGN = 64  # what TensorFlow's CPU kernels expect (EIGEN_MAX_ALIGN_BYTES)


def _aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    skip = -raw.ctypes.data % _ALIGN
    return raw[skip: skip + nbytes].view(dtype).reshape(shape).view(_Loaded)


def _read_exact(fd: int, array: np.ndarray, offset: int, path: Path) -> None:
    view = memoryview(array.reshape(-1)).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CorruptArtifactError("the archive ended inside a weights dataset", path=path)
        done += got


_PRIVATE = contextvars.ContextVar("kerasave_private_files", default=False)


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Inside, the files verification reads are kerasave's own temporaries.

    Nobody else writes those, so they may be mapped into memory. A file that
    another process truncates under a mapping kills the reader with SIGBUS, so
    ``verify`` of a user's path reads with ``preadv`` instead.
    """
    token = _PRIVATE.set(True)
    try:
        yield
    finally:
        _PRIVATE.reset(token)


def may_map() -> bool:
    """Whether the files being read are kerasave's own temporaries (``private_files``)."""
    return _PRIVATE.get()


class Source:
    """The contiguous, uncompressed HDF5 datasets of one file, by their byte offsets.

    ``array`` reads a dataset with one ``preadv`` into 64-byte-aligned memory that
    TensorFlow adopts (loads), or, when ``mapped`` inside ``private_files``,
    returns a read-only view of the file's pages (verification of a save:
    nothing is copied or allocated; the page cache still holds what was written).
    ``begin``/``end`` bound the HDF5 file inside the file at ``fd`` (a zip
    member), and HDF5 offsets count from ``begin``. Anything else (chunked,
    compressed, never written) returns None.
    """

    def __init__(self, fd: int, begin: int, end: int, path: Path, *, mapped: bool = False):
        self.fd, self.begin, self.end, self.path = fd, begin, end, path
        self.reads: list[tuple[Any, str]] | None = None  # (array, dataset), when asked
        self._map = None
        if mapped and end > begin and may_map():
            self._map = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)

    def array(self, dataset: h5py.Dataset) -> np.ndarray | None:
        array = self._array(dataset)
        if self.reads is not None:  # (None: read some other way, by the caller)
            self.reads.append((array, dataset.name))
        return array

    def _array(self, dataset: h5py.Dataset) -> np.ndarray | None:
        dtype = dataset.dtype
        if (dataset.chunks is not None or dataset.compression or dataset.shape is None
                or not dtype.isnative or dtype.kind not in "fiucb"):
            return None
        shape = tuple(dataset.shape)
        if int(np.prod(shape, dtype=np.int64)) == 0:
            return _aligned(shape, dtype)
        offset = dataset.id.get_offset()
        if offset is None:  # storage never written: the fill value, via h5py
            return None
        return self.raw(offset, shape, dtype, f"dataset {dataset.name}")

    def raw(self, offset: int, shape: tuple[int, ...], dtype: Any, what: str) -> np.ndarray:
        """``shape``/``dtype`` values stored as they are in memory at ``offset`` (from
        ``begin``): a view of the mapped file, or one ``preadv`` into aligned memory."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return _aligned(shape, dtype)
        start = self.begin + offset
        if start + count * dtype.itemsize > self.end:
            raise CorruptArtifactError(f"{what} runs past the end of {self.path.name}",
                                       path=self.path)
        if self._map is not None:
            return np.frombuffer(self._map, dtype, count, start).reshape(shape)
        array = _aligned(shape, dtype)
        _read_exact(self.fd, array, start, self.path)
        return array


@functools.cache
def _store_class() -> type:
    """An ``H5IOStore`` whose datasets come from a ``Source``."""
    from keras.src.saving import saving_lib

    base = saving_lib.H5IOStore
    if not all(hasattr(base, name) for name in ("get", "_get_h5_file", "__getitem__")):
        raise Unsupported("this Keras' H5IOStore differs")

    class FastStore(base):  # type: ignore[misc, valid-type]
        def __init__(self, source: Source):
            self._source = source
            super().__init__(io.BytesIO(), mode="r")

        def _get_h5_file(self, path_or_io: Any, mode: str | None = None) -> h5py.File:
            source = self._source
            return h5py.File(Window(source.fd, source.begin, source.end - source.begin), "r")

        def __getitem__(self, key: str) -> Any:
            group = getattr(self, "_h5_entry_group", None)
            dataset = group.get(key) if isinstance(group, h5py.Group) else None
            if isinstance(dataset, h5py.Dataset) and "dtype" not in dataset.attrs:
                fast = self._source.array(dataset)
                if fast is not None:
                    return fast
            elif self._source.reads is not None:
                self._source.reads.append((None, key))  # read by Keras, not by the source
            return super().__getitem__(key)

    return FastStore


Recorded = dict[int, tuple[Any, np.ndarray]]  # id(variable): (variable, value)


@contextlib.contextmanager
def recorded(targets: Any) -> Iterator[Recorded]:
    """``variable.assign(array)`` on one of ``targets`` (None: any variable) in this
    thread records the array instead of converting and assigning it.

    Verification uses it with mapped arrays: the twin built from the file never
    copies its values; they are compared where they lie. Shapes are checked as
    ``assign`` checks them. Yields ``{id(variable): (variable, array)}``.
    """
    got: Recorded = {}
    if targets is not None and not targets:
        yield got  # (nothing to record)
        return
    if not on("recorded_assign"):
        raise Unsupported("recording assignments is off")
    from keras.src.backend.common.variables import Variable

    owner = threading.get_ident()
    wanted = None if targets is None else {id(v) for v in targets}

    def patch(original: Any) -> Any:
        def record(variable: Any, value: Any) -> Any:
            if (threading.get_ident() != owner or not isinstance(value, np.ndarray)
                    or (wanted is not None and id(variable) not in wanted)):
                return original(variable, value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"The shape of the target variable and the shape of the "
                                 f"target value must match: variable.shape={variable.shape}, "
                                 f"value.shape={value.shape} ({variable.path})")
            got[id(variable)] = (variable, value)
            return value

        return record

    with _patched(Variable, "assign", patch):
        yield got


@contextlib.contextmanager
def _patched(owner: Any, name: str, patch: Callable[[Any], Any]) -> Iterator[None]:
    """``owner.name`` replaced by ``patch(original)`` while the block runs.

    The original is read under the lock: a thread that waited for another's
    patch to be removed must not take that patch for the original.
    """
    with _PATCH_LOCK, patching():
        original = getattr(owner, name)
        setattr(owner, name, patch(original))
        try:
            yield
        finally:
            setattr(owner, name, original)


@contextlib.contextmanager
def uninitialized() -> Iterator[list[Any]]:
    """Variables this thread creates from an initializer inside get no memory and
    run no initializer until assigned; they are collected in the yielded list.

    Variables given a concrete value (an optimizer's step counter) are created as
    usual. Other threads are not affected. Call ``initialize_rest`` on the list
    once the values are loaded.
    """
    created: list[Any] = []
    if not on("deferred_init"):
        yield created  # (variables are initialized as usual: nothing to defer)
        return
    from keras.src.backend.tensorflow.core import Variable
    from tensorflow.python.ops.resource_variable_ops import UninitializedVariable

    owner = threading.get_ident()

    def patch(original: Any) -> Any:
        def defer(variable: Any, initializer: Any) -> None:
            if threading.get_ident() != owner:
                original(variable, initializer)
                return
            # A real TensorFlow variable (handle, id, device) whose memory is not
            # allocated until its first assignment.
            variable._initialize(UninitializedVariable(
                shape=variable._shape, dtype=variable._dtype, trainable=variable.trainable,
                name=variable.name,
                aggregation=variable._map_aggregation(variable.aggregation),
                synchronization=variable._map_synchronization(variable.synchronization)))
            variable._initializer = initializer
            created.append(variable)

        return defer

    with _patched(Variable, "_initialize_with_initializer", patch):
        yield created


_PATCH_LOCK = threading.RLock()


def build_deferred(build: Callable[[], Any]) -> tuple[Any, list[Any]]:
    """``build()`` inside ``uninitialized``, and the variables it deferred.

    A model whose building reads its own variables (an adapted
    ``Normalization`` finalizes its state from them) cannot be built that way;
    it is built again as usual, initializers and all.
    """
    try:
        with uninitialized() as created:
            return build(), created
    except KerasaveError:
        raise
    except Exception:
        return build(), []


def initialize_rest(created: list[Any]) -> None:
    """What nothing was loaded into starts as Keras would start it: its initializer."""
    for variable in created:
        if not variable._value.is_initialized():
            variable._value.assign(variable._initializer(variable._shape,
                                                         dtype=variable._dtype))
        variable._initializer = None


def _raise_failure(saving_lib: Any, errors: dict[int, Any]) -> None:
    """What went wrong while Keras' traversal read the values: ours first, as raised."""
    for _, error in errors.values():
        if isinstance(error, CorruptArtifactError):
            raise error
    saving_lib._raise_loading_failure(errors)


def _crc32_span(fd: int, start: int, size: int, path: Path) -> int:
    """The zip CRC-32 of ``size`` bytes of ``fd`` from ``start``."""
    # (a buffer no larger than the span: zeroing 16 MB costs more than a small file's CRC)
    crc, done, chunk = 0, 0, bytearray(max(1, min(16 * 2**20, size)))
    view = memoryview(chunk)
    while done < size:
        got = os.preadv(fd, [view[: min(len(chunk), size - done)]], start + done)
        if got <= 0:
            raise CorruptArtifactError(f"{_WEIGHTS} is truncated", path=path)
        crc = _crc32(view[:got], crc)
        done += got
    return crc


def _read_state(model: keras.Model, source: Source) -> None:
    """Keras' own load traversal over the weights in ``source``, read by ``_store_class``
    (or, for a kept twin, the reads it made last time: see ``_Replay``)."""
    from keras.src.saving import saving_lib

    replay = _REPLAY.get()
    if replay is not None and replay.run(model, source):
        return
    _check_sizes(model, source)
    _warm_skipsets(saving_lib)
    store = _store_class()(source)
    failed: set[int] = set()
    errors: dict[int, Any] = {}
    try:
        saving_lib._load_state(model, weights_store=store, assets_store=None, inner_path="",
                               visited_saveables=set(), failed_saveables=failed,
                               error_msgs=errors)
    finally:
        store.close()
    if failed:
        _raise_failure(saving_lib, errors)


_SIZE_FLOOR = 16 * 2**20  # what any layer may keep beside its variables (IDF weights...)


def _itemsize(dtype: Any) -> int:
    try:
        return np.dtype(str(dtype)).itemsize
    except TypeError:
        return 8


def _check_sizes(model: keras.Model, source: Source) -> None:
    """Shapes before bytes: ``ArchitectureMismatchError`` for a dataset in ``source``
    larger than any variable of ``model`` (or its optimizer, or metrics) could take,
    before Keras' traversal reads anything (it compares each value's shape with
    its variable only once it is read, into memory of the declared shape).

    A layer may keep arrays that are no variable yet (``IndexLookup``'s IDF
    weights): up to ``_SIZE_FLOOR`` bytes each are not refused. A save's own
    temporary (``private_files``) was written from the model: not checked.
    """
    if may_map():
        return
    targets = twin_variables(model) + list(getattr(model, "metrics_variables", None) or [])
    sizes = [(math.prod(v.shape) * _itemsize(v.dtype), v) for v in targets]
    largest = max(sizes, key=lambda item: item[0], default=(0, None))
    limit = max(largest[0], _SIZE_FLOOR)
    found: list[str] = []

    def visit(name: str, obj: Any) -> bool | None:
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            declared = math.prod(obj.shape) * obj.dtype.itemsize
            if declared > limit:
                found.append(f"the dataset /{name} declares shape {tuple(obj.shape)} "
                             f"{obj.dtype} ({declared:,} bytes)")
                return True
        return None

    with h5py.File(Window(source.fd, source.begin, source.end - source.begin), "r") as f:
        f.visititems(visit)
    if found:
        biggest = largest[1]
        what = ("the model has no variables" if biggest is None else
                f"its largest variable, {getattr(biggest, 'path', biggest.name)}, takes "
                f"{tuple(biggest.shape)} {biggest.dtype} ({largest[0]:,} bytes)")
        raise ArchitectureMismatchError(f"{found[0]}: more than any variable of the model can "
                                        f"take ({what})", path=source.path)


def load_keras(path: Path, config: dict[str, Any], *, compile: bool, safe_mode: bool,
               custom_objects: Any, checksummed: bool) -> keras.Model:
    """Load a ``.keras`` archive like ``keras.saving.load_model``, at disk speed.

    ``checksummed`` says the whole file was already checked (kerasave's manifest);
    otherwise the zip's own CRC-32 of the weights member is checked first.

    Raises:
        Unsupported: the caller should use Keras' reader instead (nothing was changed).
        CorruptArtifactError: the archive is damaged.
    """
    model, _ = _restore_keras(path, config, compile=compile, safe_mode=safe_mode,
                              custom_objects=custom_objects, checksummed=checksummed,
                              mapped=False)
    return model


def twin_keras(path: Path, config: dict[str, Any]) -> Any:
    """The model a ``.keras`` archive loads as, for verification, holding no copies.

    A context manager giving ``(twin, recorded)``. The twin is built and
    compiled from the archive's config and Keras' own traversal runs over it,
    but every value Keras would assign is recorded as a read-only view of the
    archive's pages instead (see ``recorded``): compare those, and run the twin
    in a ``keras.StatelessScope`` that maps its variables to values bit-equal to
    them. Variables nothing was read for are initialized as a load initializes
    them. The twin is lent from ``TWINS``.
    """
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    return TWINS.lend(
        ("keras", json.dumps(config, sort_keys=True)),
        lambda: saving_lib._model_from_config(json.dumps(config), None, True, True),
        lambda model: _read_keras(path, model, checksummed=True, mapped=True))


class _Twin:
    """A model built for verification, and which variables verification records."""

    def __init__(self, model: keras.Model, created: list[Any]) -> None:
        self.model, self._created = model, created
        self._expected: set[int] | None = None
        self.kept = on("twin_cache") and _keras_only(model)
        self._replay = _Replay(model) if self.kept else None
        if self.kept:
            fixed_config(model)  # its config is serialized once, for all the saves it checks

    def fill(self, read: Callable[[keras.Model], Recorded]) -> tuple[keras.Model, Recorded]:
        token = _REPLAY.set(self._replay)
        try:
            values = read(self.model)
        finally:
            _REPLAY.reset(token)
        if self._expected is None:
            initialize_rest([v for v in self._created if id(v) not in values])
            self._created = []
            self._expected = set(values)
        elif set(values) != self._expected:
            raise _Stale()
        if self._replay is not None:
            self._replay.learn(values)
        return self.model, values


class _Replay:
    """Keras' load traversal of a kept twin, reduced to the reads it made.

    Which dataset Keras' traversal gives to which variable depends only on the
    model (a kept twin does not change) and on the names in the file: groups
    and datasets, as ``H5IOStore`` looks them up. So once a traversal over a
    file has read every value from a dataset, a later file whose HDF5 holds
    exactly the same names is read the same way: each variable ``assign``s its
    dataset again (recorded, as in the traversal), without Keras' Python walk
    over the layers (~10 ms for a small model). Anything else, or a file with
    any other name, runs the traversal again.
    """

    def __init__(self, model: keras.Model) -> None:
        self._model = model
        self._names: list[bytes] | None = None  # every link in the file
        self._plan: list[tuple[Any, str]] | None = None  # (variable, dataset)
        self._pending: tuple[list[bytes], Source] | None = None  # the traversal running

    def run(self, model: keras.Model, source: Source) -> bool:
        """Replay the reads into ``model``; False when the traversal must run (and is
        then watched, to learn from)."""
        self._pending = None
        if model is not self._model or source._map is None:
            return False  # (only verification's mapped reads of a save's temporary)
        names: list[bytes] = []
        with h5py.File(Window(source.fd, source.begin, source.end - source.begin), "r") as f:
            f.id.links.visit(names.append)
            arrays = self._replayed(f, source) if names == self._names else None
        if arrays is not None:
            for variable, array in arrays:
                variable.assign(array)  # recorded, as the traversal's assign is
            return True
        self._plan = None
        source.reads = []
        self._pending = (names, source)
        return False

    def _replayed(self, f: h5py.File, source: Source) -> list[tuple[Any, Any]] | None:
        """Each planned variable with its dataset's values, or None if one has changed."""
        arrays = []
        for variable, name in self._plan or ():
            dataset = f.get(name)
            if not isinstance(dataset, h5py.Dataset) or len(dataset.attrs):
                return None
            array = source.array(dataset)
            if array is None:
                return None
            arrays.append((variable, array))
        return arrays if self._plan else None

    def learn(self, values: Recorded) -> None:
        """After a traversal: what each recorded value was read from. Only a traversal
        whose every read became one recorded value is replayed: a layer may do more
        with what it reads (Keras' ``IndexLookup`` derives state from its IDF
        weights, assigned to a variable of its own), and a replay would skip that."""
        if self._pending is None:
            return
        names, source = self._pending
        self._pending = None
        reads = source.reads or []
        source.reads = None
        if any(array is None for array, _ in reads):
            return  # something was read by Keras' own code
        read_as = {id(array): name for array, name in reads}  # (the arrays are held)
        plan = [(variable, read_as.get(id(array))) for variable, array in values.values()]
        if (plan and all(name is not None for _, name in plan)
                and sorted(name for _, name in plan) == sorted(name for _, name in reads)):
            self._names, self._plan = names, plan  # type: ignore[assignment]


_REPLAY: contextvars.ContextVar[_Replay | None] = contextvars.ContextVar(
    "kerasave_replay", default=None)


class _Stale(Exception):
    """A kept twin was given other variables than when it was built."""


class Twins:
    """Twins built for verification, kept for the next check of the same architecture.

    Saving the same model again (each epoch, say) would otherwise rebuild the
    same model from the same config every time: about 30 ms for the tutorial's
    model, most of a small save. A twin is kept only when every layer and the
    optimizer are Keras' own classes, so no redefined custom class can hide
    behind an unchanged config. It is lent to one verification at a time and
    holds no weights: its variables were never assigned.
    """

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._kept: dict[Any, _Twin] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lend(self, key: Any, build: Callable[[], keras.Model],
             read: Callable[[keras.Model], Recorded]) -> Iterator[tuple[keras.Model, Recorded]]:
        """``(twin, recorded)``: ``build`` (run with initializers deferred) or a kept
        twin for ``key``, and what ``read`` records for it."""
        with self._lock:
            twin = self._kept.pop(key, None)
        result = None
        if twin is not None:
            try:
                result = twin.fill(read)
            except _Stale:
                twin = None
        if twin is None:
            twin = _Twin(*build_deferred(build))
            result = twin.fill(read)
        yield result
        if twin.kept:  # (not after a failure: the exception skips this)
            with self._lock:
                self._kept[key] = twin
                while len(self._kept) > self._size:
                    self._kept.pop(next(iter(self._kept)))

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


def _keras_only(model: keras.Model) -> bool:
    """Whether every layer, the optimizer and everything their configs name (an
    activation, an initializer...) is Keras' own, so nothing can be redefined."""
    if not hasattr(model, "_flatten_layers"):
        return False  # (cannot tell: keep no twin)
    objects = list(model._flatten_layers(include_self=True))
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        objects.append(optimizer)
    if not all(type(o).__module__.startswith("keras.") for o in objects):
        return False
    try:
        config = model.get_config()
    except Exception:
        return False

    def own(node: Any) -> bool:
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and not module.startswith("keras"):
                return False  # a registered function or class of the user's
            return all(own(v) for v in node.values())
        if isinstance(node, (list, tuple)):
            return all(own(v) for v in node)
        return True

    return own(config)


TWINS = Twins()


def _restore_keras(path: Path, config: dict[str, Any], *, compile: bool, safe_mode: bool,
                   custom_objects: Any, checksummed: bool,
                   mapped: bool) -> tuple[keras.Model, Recorded]:
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    model, created = build_deferred(lambda: saving_lib._model_from_config(
        json.dumps(config), custom_objects, compile, safe_mode))
    values = _read_keras(path, model, checksummed=checksummed, mapped=mapped)
    initialize_rest([v for v in created if id(v) not in values])
    return model, values


def _check_saving_lib(saving_lib: Any) -> None:
    """Raise Unsupported unless Keras' own traversal may read through a ``Source``."""
    if not on("keras_reader"):
        raise Unsupported("the fast .keras/weights reader is off")
    if not all(hasattr(saving_lib, name) for name in (
            "_load_state", "_model_from_config", "_raise_loading_failure")):
        raise Unsupported("this Keras' saving_lib differs")


def _read_keras(path: Path, model: keras.Model, *, checksummed: bool,
                mapped: bool) -> Recorded:
    """Keras' traversal of ``model`` over the archive's weights; ``mapped`` records."""
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if _WEIGHTS not in names or len(names) > 3:
            raise Unsupported("npz/sharded weights or assets")
        start, size = member_span(path, zf, _WEIGHTS)
        crc = zf.getinfo(_WEIGHTS).CRC
    _store_class()  # raises Unsupported before anything is read
    fd = os.open(path, os.O_RDONLY)
    try:
        if not checksummed and _crc32_span(fd, start, size, path) != crc:
            raise CorruptArtifactError(f"{_WEIGHTS} fails its zip CRC-32", path=path)
        source = Source(fd, start, start + size, path, mapped=mapped)
        with recorded(twin_variables(model) if mapped else ()) as values:
            _read_state(model, source)
        return values
    finally:
        os.close(fd)


@contextlib.contextmanager
def legacy_reads(source: Source) -> Iterator[None]:
    """Keras' legacy HDF5 weight loader, in this thread, reads datasets from ``source``.

    ``load_weights_from_hdf5_group`` keeps its own rules (layer order, counts,
    shapes); only where the bytes come from changes: one ``preadv`` into memory
    TensorFlow adopts, or mapped pages for verification, instead of h5py's copy.
    """
    from keras.src.legacy.saving import legacy_h5_format

    target = "load_subset_weights_from_hdf5_group"
    names = getattr(legacy_h5_format, "load_attributes_from_hdf5_group", None)
    if not hasattr(legacy_h5_format, target) or names is None or not on("legacy_h5_io"):
        yield  # another Keras: its own reads, slower
        return
    owner = threading.get_ident()

    def patch(original: Any) -> Any:
        def subset(group: h5py.Group) -> list[np.ndarray]:
            if threading.get_ident() != owner:
                return original(group)
            values = []
            for name in names(group, "weight_names"):
                dataset = group[name]
                if not isinstance(dataset, h5py.Dataset):
                    raise ValueError(f"{group.name}/{name} is not a dataset")
                fast = source.array(dataset)
                values.append(fast if fast is not None else np.asarray(dataset))
            return values

        return subset

    with _patched(legacy_h5_format, target, patch):
        yield


def twin_variables(model: keras.Model) -> list[Any]:
    """Every variable of a model and of its optimizer."""
    found = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and hasattr(optimizer, "variables"):
        found += list(optimizer.variables)
    return found


# --------------------------------------------------------------------------- writing


def variable_view(variable: Any) -> np.ndarray | None:
    """A read-only view of a CPU variable's memory, or None (bfloat16, other devices)."""
    if variable.dtype == "bfloat16" or not on("dlpack_views"):
        return None
    tensor = variable.value.read_value()
    if "CPU" not in (tensor.device or "CPU"):
        return None
    return np.from_dlpack(_Exported(tensor))


class _Exported:
    """A tensor as NumPy's ``from_dlpack`` takes it, through TensorFlow's public
    ``tf.experimental.dlpack`` (an ``EagerTensor`` has no ``__dlpack__`` of its own
    before TensorFlow 2.19)."""

    def __init__(self, tensor: Any) -> None:
        self._tensor = tensor

    def __dlpack__(self, **_: Any) -> Any:
        import tensorflow as tf

        return tf.experimental.dlpack.to_dlpack(self._tensor)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0 (variable_view takes CPU tensors only)


@contextlib.contextmanager
def legacy_writes() -> Iterator[None]:
    """Keras' legacy HDF5 writer, in this thread, writes views of the variables.

    It copies every value to NumPy first (all of the optimizer's at once); h5py
    writes from a view just as well.
    """
    from keras.src.legacy.saving import legacy_h5_format

    if (not hasattr(getattr(legacy_h5_format, "backend", None), "convert_to_numpy")
            or not on("legacy_h5_io")):
        yield
        return
    owner = threading.get_ident()

    class Views:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def convert_to_numpy(self, x: Any) -> Any:
            if threading.get_ident() == owner and isinstance(x, keras.Variable):
                view = variable_view(x)
                if view is not None:
                    return view
            return self._real.convert_to_numpy(x)

    with _patched(legacy_h5_format, "backend", Views):
        yield


def write_weights(model: keras.Model, path: Path, *, userblock: int = 0) -> None:
    """Keras' weights file (``model.save_weights`` layout), written without copies.

    Keras' own traversal decides what goes where; values reach h5py as
    read-only views of the variables' memory instead of two copies each.
    """
    from keras.src.saving import saving_lib

    if not on("keras_writer"):
        raise Unsupported("the fast writer is off")
    if not hasattr(saving_lib, "_save_state"):
        raise Unsupported("this Keras' saving_lib differs")

    class Store(saving_lib.H5IOStore):  # type: ignore[misc, name-defined]
        def _get_h5_file(self, path_or_io: Any, mode: str | None = None) -> h5py.File:
            if userblock:
                return h5py.File(path_or_io, "w", userblock_size=userblock)
            return h5py.File(path_or_io, "w")

        def __setitem__(self, key: str, value: Any) -> None:
            array = None
            if isinstance(value, keras.Variable):
                array = variable_view(value)
            elif isinstance(value, np.ndarray) and value.dtype.kind in "fiucb":
                array = value
            if array is None or not hasattr(self, "_create_h5_group"):
                super().__setitem__(key, value)
                return
            if not self._h5_entry_initialized:
                self._create_h5_group(self._h5_entry_path)
            self._h5_entry_group[key] = array

    _warm_skipsets(saving_lib)
    store = Store(path, mode="w")
    try:
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                               visited_saveables=set())
    finally:
        store.close()


def _warm_skipsets(saving_lib: Any) -> None:
    """Keras' traversal builds reference objects (an optimizer, with variables) each
    time it meets a kind of object: not allowed in a stateless scope.

    Keras 3.15 means to cache them, but stores the cache under
    ``saving_attr_skipset_<kind>`` and looks for ``saving_attr_skiplist_<kind>``;
    kerasave fills the name it looks for, once.
    """
    from keras.src.backend.common import global_state

    for kind in ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer",
                 "Loss", "Cross", "Feature"):
        if global_state.get_global_attribute(f"saving_attr_skiplist_{kind}") is not None:
            continue
        try:
            skipset = saving_lib.get_attr_skipset(kind)
        except Exception:
            continue
        global_state.set_global_attribute(f"saving_attr_skiplist_{kind}", skipset)


def map_weights(model: keras.Model, path: Path) -> Recorded:
    """What a Keras weights file would assign to ``model``'s variables, assigning
    nothing: read-only views of the file's pages, by variable (see ``recorded``).

    Raises:
        Unsupported: the caller should load with Keras' reader instead.
    """
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    _store_class()
    fd = os.open(path, os.O_RDONLY)
    try:
        with recorded(twin_variables(model)) as values:
            _read_state(model, Source(fd, 0, os.fstat(fd).st_size, path, mapped=True))
    finally:
        os.close(fd)
    return values


def read_weights(model: keras.Model, path: Path) -> Callable[[], None]:
    """``model.load_weights`` of a Keras weights file, staged: returns the assignment.

    Keras' traversal runs in a ``keras.StatelessScope``, which records every
    ``variable.assign`` instead of applying it: everything is read (one
    ``preadv`` per array) and checked while the model stays as it was, and the
    returned function applies it all. No copy of the old values is needed.

    Raises:
        Unsupported: the caller should use Keras' reader (nothing was changed).
    """
    from keras.src.saving import saving_lib

    _check_saving_lib(saving_lib)
    _store_class()
    _warm_skipsets(saving_lib)
    fd = os.open(path, os.O_RDONLY)
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            _read_state(model, Source(fd, 0, os.fstat(fd).st_size, path))
    finally:
        os.close(fd)
    values = dict(scope.state_mapping)
    candidates = twin_variables(model) + list(getattr(model, "metrics_variables", []))
    targets = {id(v): v for v in candidates if id(v) in values}
    if len(targets) != len(values):
        raise Unsupported("assigned something that is not a model or optimizer variable")

    def apply() -> None:
        for key, variable in targets.items():
            variable.assign(values.pop(key))

    return apply

_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_ZIP32_LIMIT = 0xFFFFFFFF


def _dos_time() -> tuple[int, int]:
    t = time.localtime()
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2,
            (max(t.tm_year, 1980) - 1980) << 9 | t.tm_mon << 5 | t.tm_mday)


def _local_header(name: bytes, crc: int, size: int, when: tuple[int, int]) -> bytes:
    return _LOCAL_HEADER.pack(b"PK\x03\x04", 20, 0, zipfile.ZIP_STORED, when[0], when[1],
                              crc, size, size, len(name), 0) + name


def _has_assets(model: keras.Model) -> bool:
    if not hasattr(model, "_flatten_layers"):
        raise Unsupported("cannot list the layers to look for assets")
    return any(hasattr(layer, "save_assets") for layer in model._flatten_layers(include_self=True))


def save_keras(model: keras.Model, path: Path) -> None:
    """Write ``model`` as a ``.keras`` archive that Keras reads, at the disk's speed.

    The archive holds what ``model.save`` writes (``metadata.json``,
    ``config.json``, ``model.weights.h5`` stored uncompressed, written by Keras'
    own traversal), but the HDF5 file is written in place: h5py creates it with
    a *userblock* (space HDF5 leaves to the user at the start of a file) holding
    the zip's first two members and the weights member's header (config.json
    ends in whitespace up to the userblock's power-of-two size), so the weights
    go to disk once, straight from the variables, and the zip's central
    directory follows them.

    Raises:
        Unsupported: the model has assets, or the weights are past the 4 GiB a
            plain zip entry holds; the caller uses ``model.save`` instead.
    """
    from keras.src.saving import saving_lib

    if not on("keras_writer"):
        raise Unsupported("the fast writer is off")
    if not all(hasattr(saving_lib, name) for name in (
            "_save_state", "_serialize_model_as_json", "H5IOStore")):
        raise Unsupported("this Keras' saving_lib differs")
    if _has_assets(model):
        raise Unsupported("the model has assets")
    config_json, metadata_json = saving_lib._serialize_model_as_json(model)
    when = _dos_time()
    weights_name = _WEIGHTS.encode()
    metadata, config = metadata_json.encode(), config_json.encode()
    used = (2 * _LOCAL_HEADER.size + len(b"metadata.json") + len(metadata)
            + len(b"config.json") + len(config) + _LOCAL_HEADER.size + len(weights_name))
    userblock = 512
    while userblock < used:
        userblock *= 2
    # The weights' bytes must start exactly at the userblock's end: JSON allows
    # trailing whitespace, so config.json takes up the slack.
    config += b"\n" + b" " * (userblock - used - 1) if userblock > used else b""
    prefix = bytearray()
    entries = []  # (name, crc, size, offset of the local header): the central directory
    for name, data in ((b"metadata.json", metadata), (b"config.json", config)):
        crc = zlib.crc32(data)
        entries.append((name, crc, len(data), len(prefix)))
        prefix += _local_header(name, crc, len(data), when) + data
    weights_offset = len(prefix)

    write_weights(model, path, userblock=userblock)
    with open(path, "r+b") as f:
        end = os.fstat(f.fileno()).st_size
        if end >= _ZIP32_LIMIT:  # sizes and offsets must fit a plain zip's 32 bits
            raise Unsupported("weights past 4 GiB need zip64")
        size = end - userblock
        crc = _crc32_span(f.fileno(), userblock, size, path)
        prefix += _local_header(weights_name, crc, size, when)
        assert len(prefix) == userblock
        f.seek(0)
        f.write(prefix)
        entries.append((weights_name, crc, size, weights_offset))
        central = bytearray()
        for name, entry_crc, entry_size, offset in entries:
            central += _CENTRAL.pack(
                b"PK\x01\x02", 20 | 3 << 8, 20, 0, zipfile.ZIP_STORED, when[0], when[1],
                entry_crc, entry_size, entry_size, len(name), 0, 0, 0, 0, 0o100644 << 16,
                offset) + name
        central += _END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central),
                             end, 0)
        f.seek(end)
        f.write(central)  # (the facade fsyncs the file before renaming it into place)
