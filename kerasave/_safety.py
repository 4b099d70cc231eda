"""Refusing artifacts that would run code, or reach outside themselves, when loaded.

Applied by every loader, whatever the Keras version (Keras added some of these
guards only in 3.15; kerasave supports 3.12 and later).
"""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
from h5py import h5d, h5l, h5o, h5s, h5t, h5z

from kerasave._errors import (
    CorruptArtifactError,
    UnsafeArtifactError,
    foreign_errors,
    unknown_class,
)

__all__ = ["refuse_code", "code_in_config", "check_h5", "check_zip", "check_nesting",
           "dataset_problem", "declared_bytes", "model_budget", "refuse_oversized",
           "MAX_DEPTH", "NON_MODELING_APIS"]

# Layer classes whose config makes loading run or fetch code.
_CODE_CLASSES = {
    "Lambda": "its Python code would run when the model is built",
    "TFSMLayer": "it loads a SavedModel (a TensorFlow program) from a path the file names",
}
# Deflate cannot do much better than ~1000:1; weights compress about 1.1:1.
_MAX_RATIO = 200
_RATIO_FLOOR = 16 * 2**20  # small members may compress well (configs, zeros)
# An HDF5 dataset past the floor may declare at most this many times the bytes it
# stores (deflate's ceiling is about 1032:1); a dataset that stores nothing (its
# fill value) at most the floor. One chunk may be no larger than its dataset (or
# h5py's own largest chunk, 1 MiB), and store no more than deflate's worst case.
_H5_MAX_EXPANSION = 1100
_H5_CHUNK_FLOOR = 2**20


# Keras functions a config may name that are not modeling functions: calling them
# from a file loads or saves files, downloads, registers classes or switches safe mode
# off (Keras 3.15's NON_MODELING_APIS, which 3.12 only partly refuses: kerasave
# refuses all of them on every Keras).
NON_MODELING_APIS = frozenset({
    "keras.backend.clear_session", "keras.config.enable_unsafe_deserialization",
    "keras.models.load_model", "keras.models.model_from_json", "keras.models.save_model",
    "keras.preprocessing.image_dataset_from_directory", "keras.preprocessing.image.load_img",
    "keras.preprocessing.image.save_img", "keras.preprocessing.text_dataset_from_directory",
    "keras.saving.deserialize_keras_object", "keras.saving.load_model",
    "keras.saving.load_weights", "keras.saving.register_keras_serializable",
    "keras.saving.save_model", "keras.saving.save_weights",
    "keras.saving.serialize_keras_object", "keras.utils.audio_dataset_from_directory",
    "keras.utils.clear_session", "keras.utils.deserialize_keras_object",
    "keras.utils.get_file", "keras.utils.image_dataset_from_directory",
    "keras.utils.load_img", "keras.utils.register_keras_serializable",
    "keras.utils.save_img", "keras.utils.serialize_keras_object",
    "keras.utils.text_dataset_from_directory",
})
# Modules whose functions run programs, load code or touch files: a config naming
# one of them is an attack (CVE-2025-1550), never a missing custom object.
_CODE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "pickle", "marshal",
    "socket", "runpy", "code", "codeop", "pty", "ctypes", "io", "pathlib", "tempfile",
    "urllib", "http", "webbrowser", "multiprocessing", "signal", "pdb", "shelve", "dill",
    "cloudpickle", "joblib", "requests", "fsspec"})
_CODE_BUILTINS = frozenset({"eval", "exec", "compile", "open", "__import__", "getattr",
                            "setattr", "delattr", "input", "breakpoint", "globals", "vars"})
MAX_DEPTH = 64  # nesting of a config (Keras' own: ~10, a model nested in models: ~30)


def check_nesting(obj: Any, source: str | Path | None, *, limit: int = MAX_DEPTH) -> None:
    """CorruptArtifactError when lists and mappings nest deeper than ``limit`` (every
    walker of a config, Keras' own included, recurses); walked without recursion."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > limit:
            raise CorruptArtifactError(
                f"the config nests lists and mappings deeper than {limit} levels", path=source)
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, Mapping | list | tuple))


def _names(obj: Mapping[str, Any]) -> tuple[set[str], str | None]:
    """The names under which Keras may resolve the object a config dict describes
    (``class_name``, its last dotted part, the registered name; a function's name),
    and the API name of a function it references (``keras.utils.get_file``)."""
    cls, module = obj.get("class_name"), obj.get("module")
    names: set[str] = set()
    name = obj.get("config") if cls == "function" else cls
    for value in (cls, name, obj.get("registered_name")):
        if isinstance(value, str):
            names |= {value, value.rsplit(".", 1)[-1], value.rsplit(">", 1)[-1]}
    api = f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else None
    return names, api


def _registered_code_class(obj: Mapping[str, Any]) -> str | None:
    """A registered custom class (``package>Name``) that is a Lambda or a TFSMLayer."""
    registered = obj.get("registered_name")
    if not isinstance(registered, str) or ">" not in registered:
        return None
    from kerasave._runtime.lazy import keras

    try:
        found = keras.saving.get_registered_object(registered)
    except Exception:
        return None
    for base in _CODE_CLASSES:
        cls = getattr(keras.layers, base, None)
        if isinstance(found, type) and isinstance(cls, type) and issubclass(found, cls):
            return base
    return None


def code_in_config(config: Any, *, compiled: bool = True) -> tuple[str, str] | None:
    """What in a config would run code when loaded (``"a Lambda layer ('doubler')"``)
    and why; None when nothing would. ``compiled``: the load compiles the model, so
    the compile settings (a lambda loss or metric) count too.

    A class counts under every name Keras resolves it by (``{"module": "keras",
    "class_name": "layers.TFSMLayer"}`` is a TFSMLayer; so is a registered subclass),
    and so does a reference to a Keras function that is not a modeling function
    (``keras.utils.get_file``). The walk is iterative: no config nests deep enough
    to exhaust the stack here.
    """

    def walk(root: Any, owner: tuple[str, str]) -> tuple[str, str] | None:
        stack = [(root, owner)]
        while stack:
            obj, owner = stack.pop()
            if isinstance(obj, list | tuple):
                stack.extend((v, owner) for v in reversed(obj))
                continue
            if not isinstance(obj, Mapping):
                continue
            cls = obj.get("class_name")
            inner = obj.get("config")
            name = inner.get("name") if isinstance(inner, Mapping) else None
            if isinstance(cls, str) and isinstance(name, str):
                owner = (cls, name)
            shown = name if isinstance(name, str) else "?"
            names, api = _names(obj)
            hit = next((c for c in _CODE_CLASSES if c in names), None) \
                or _registered_code_class(obj)
            if hit:
                return f"a {cls if isinstance(cls, str) else hit} layer ({shown!r})", \
                    _CODE_CLASSES[hit]
            if cls == "__lambda__" or obj.get("function_type") == "lambda":
                # A lambda serialized as its bytecode, in a Lambda subclass or any layer.
                return f"a {owner[0]} layer ({owner[1]!r})", _CODE_CLASSES["Lambda"]
            module = obj.get("module")
            root = module.split(".", 1)[0] if isinstance(module, str) else None
            if root in _CODE_MODULES or (root == "builtins" and names & _CODE_BUILTINS):
                return (f"a reference to {api} (in the {owner[0]} {owner[1]!r})",
                        "it names a function that runs programs, loads code or opens files")
            if api in NON_MODELING_APIS:
                return (f"a reference to {api} (in the {owner[0]} {owner[1]!r})",
                        "it is not a modeling function: called from a file it would load, "
                        "save or fetch files, or switch safe mode off")
            stack.extend((v, owner) for v in reversed(list(obj.values())))
        return None

    if not isinstance(config, Mapping):
        return walk(config, ("?", "?"))
    found = walk({k: v for k, v in config.items() if k != "compile_config"}, ("?", "?"))
    if found is None and compiled:
        found = walk(config.get("compile_config"), ("?", "?"))
        if found is not None and found[1] == _CODE_CLASSES["Lambda"]:
            return ("a lambda in its compile settings (a loss or a metric)",
                    "its Python code would run when the model is compiled")
    return found


# A config-only file may declare at most this many bytes of variables (the model it
# describes is allocated and initialized when built); KERASAVE_MAX_MODEL_BYTES sets it.
MODEL_BYTES = 8 * 2**30
MODEL_BYTES_ENV = "KERASAVE_MAX_MODEL_BYTES"
_BACKED_SLACK = 64 * 2**20


def model_budget(backed: int | None = None) -> int:
    """The bytes of variables a config may declare: for a config that comes with its
    weights (``backed``: the bytes the file declares for them), at most twice those
    and 64 MiB; for a config alone, ``KERASAVE_MAX_MODEL_BYTES`` or 8 GiB."""
    if backed is not None:
        return 2 * backed + _BACKED_SLACK
    try:
        return int(os.environ.get(MODEL_BYTES_ENV, MODEL_BYTES))
    except ValueError:
        return MODEL_BYTES


def refuse_oversized(build: Any, config: Mapping[str, Any], limit: int,
                     source: str | Path | None) -> None:
    """CorruptArtifactError when the model ``build(config)`` makes would hold more than
    ``limit`` bytes of variables, judged before any of them is allocated.

    ``build`` runs on a copy of ``config`` in a thread of its own inside
    ``keras.StatelessScope``, where Keras creates every variable given an
    initializer without allocating or initializing it; the thread's end discards
    them (Keras' scopes and its list of uninitialized variables are per thread).
    The caller's Keras settings (its ``custom_object_scope``, dtype policy) are
    carried into that thread (fast path ``thread_settings``). A build that fails
    there raises its error here, before the real build could allocate what came
    before the failure (a huge layer followed by one that does not fit it).

    A stateful RNN makes its states from values, which a stateless scope refuses:
    the dry build's copy is made stateless, and each such layer's states are
    counted from its batch size and its cell's ``state_size``.
    """
    import copy
    import threading

    from kerasave._fastpaths.threadstate import carried
    from kerasave._runtime.lazy import keras

    dry, stateful = _without_states(copy.deepcopy(dict(config)))
    settings = carried()
    found: list[Any] = []

    def dry_run() -> None:
        if settings is not None:
            settings()
        try:
            with keras.StatelessScope(initialize_variables=False):
                model = build(dry)
                sizes = [(math.prod(int(d) for d in v.shape) * _dtype_size(v.dtype),
                          f"{getattr(v, 'path', v.name)} {tuple(v.shape)} {v.dtype}")
                         for v in getattr(model, "weights", ())]
                sizes += _state_sizes(model, stateful)
                total = sum(size for size, _ in sizes)
                largest = max(sizes, default=(0, ""))[1]
                found.append((total, largest, len(sizes)))
        except Exception as exc:
            found.append(exc)

    worker = threading.Thread(target=dry_run, name="kerasave-dry-build", daemon=True)
    worker.start()
    worker.join()
    if found and isinstance(found[0], Exception):
        if settings is None and unknown_class(found[0]):
            return  # (a class of the caller's scope: the real build, in its thread, judges)
        raise found[0]
    if found and found[0][0] > limit:
        total, largest, count = found[0]
        raise CorruptArtifactError(
            f"the config declares {count} variables of {total:,} bytes (the largest: "
            f"{largest}), more than the {limit:,} bytes allowed (a model bomb?); set "
            f"{MODEL_BYTES_ENV} to allow more", path=source)


def _without_states(config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """``config`` with every ``"stateful": true`` made false (in place), and the names
    of the layers that had it."""
    names: set[str] = set()
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("stateful") is True:
                node["stateful"] = False
                names.add(str(node.get("name")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return config, names


def _state_sizes(model: Any, stateful: set[str]) -> list[tuple[int, str]]:
    """The bytes of the states each layer named in ``stateful`` would make: its batch
    size times its cell's state sizes."""
    if not stateful:
        return []
    from kerasave.compare.probes import sublayers

    sizes = []
    for layer in sublayers(model):
        if layer.name not in stateful or not hasattr(layer, "cell"):
            continue
        try:
            batch = int(layer.input.shape[0] or 0)
        except Exception:
            continue
        state = getattr(layer.cell, "state_size", 0)
        units = [state] if isinstance(state, int) else list(state or ())
        count = batch * sum(math.prod(u) if isinstance(u, (list, tuple)) else int(u)
                            for u in units)
        sizes.append((count * _dtype_size(layer.dtype or "float32"),
                      f"{layer.name} states ({batch}, {units})"))
    return sizes


def _dtype_size(dtype: Any) -> int:
    import numpy as np

    try:
        return int(np.dtype(str(dtype)).itemsize)
    except TypeError:  # (bfloat16, float8_*: ml_dtypes, not imported for this)
        bits = re.findall(r"\d+", str(dtype))
        return max(1, int(bits[0]) // 8) if bits else 4


def refuse_code(config: Mapping[str, Any], source: str | Path | None, *,
                compiled: bool = True) -> None:
    """UnsafeArtifactError if loading the config (``compiled``: and compiling the
    model) would run code from it."""
    found = code_in_config(config, compiled=compiled)
    if found is not None:
        what, reason = found
        raise UnsafeArtifactError(
            f"the config holds {what}: {reason}; pass safe_mode=False only if you trust "
            "the file",
            path=source,
        )


def check_h5(f: h5py.File, source: str | Path) -> None:
    """UnsafeArtifactError for soft or external links, and datasets stored in external
    files or virtual (mapped from other datasets, possibly in other files)."""
    links: list[tuple[str, int]] = []
    datasets: list[bytes] = []

    def link(name: bytes, info: Any) -> None:
        if info.type != h5l.TYPE_HARD:
            links.append((name.decode(errors="replace"), info.type))

    def dataset(name: bytes, info: Any) -> None:
        if info.type == h5o.TYPE_DATASET:
            datasets.append(name)

    with foreign_errors(source, "unreadable HDF5 structure"):  # (h5py's words for damage)
        # HDF5 walks the file itself (H5Lvisit, then H5Ovisit through hard links only):
        # ~3x faster than opening every object from Python.
        f.id.links.visit(link, info=True)
        if links:
            at, kind = links[0]
            what = {h5l.TYPE_SOFT: "a soft link",
                    h5l.TYPE_EXTERNAL: "an external link"}.get(kind, "a user-defined link")
            raise UnsafeArtifactError(
                f"the HDF5 file holds {what} at /{at}: loading would read data from "
                "outside the artifact",
                path=source,
            )
        h5o.visit(f.id, dataset, info=True)
        filesize = f.id.get_filesize()
        for name in datasets:
            dsid = h5o.open(f.id, name)
            plist = dsid.get_create_plist()
            here = "/" + name.decode(errors="replace")
            count = plist.get_external_count()
            if count:
                files = [plist.get_external(i)[0] for i in range(count)]
                raise UnsafeArtifactError(
                    f"the HDF5 dataset {here} is stored in external files {files!r}",
                    path=source,
                )
            if plist.get_layout() == h5d.VIRTUAL:
                raise UnsafeArtifactError(
                    f"the HDF5 dataset {here} is virtual: its values would be read from "
                    "other datasets or files",
                    path=source,
                )
            problem = dataset_problem(dsid, plist, filesize)
            if problem:
                raise CorruptArtifactError(f"the HDF5 dataset {here} {problem}", path=source)


def declared_bytes(f: h5py.File) -> int:
    """The bytes the datasets of an HDF5 file declare (shape by item size; strings and
    other variable-length items at their in-memory reference size), without reading."""
    total = 0

    def dataset(name: bytes, info: Any) -> None:
        nonlocal total
        if info.type == h5o.TYPE_DATASET:
            dsid = h5o.open(f.id, name)
            space = dsid.get_space()
            if space.get_simple_extent_type() == h5s.SIMPLE:
                total += math.prod(space.shape) * dsid.get_type().get_size()

    h5o.visit(f.id, dataset, info=True)
    return total


def _size(count: int) -> str:
    return f"{count:,} bytes"


def dataset_problem(dsid: Any, plist: Any, filesize: int) -> str | None:
    """What is wrong with the size an HDF5 dataset declares, against what the file
    stores for it (``filesize``: the HDF5 file's bytes); None when nothing is.

    Nothing is read: the shape, the layout and the chunk index only. A dataset
    whose values would take far more memory than the file holds for them (a shape
    bomb: a huge shape over a fill value or a few compressed chunks) would be
    allocated by any reader before its values could be compared with anything.
    """
    kind = dsid.get_type()
    if kind.detect_class(h5t.VLEN) or (kind.get_class() == h5t.STRING
                                        and kind.is_variable_str()):
        # Each item is a reference into the file's heap, and any number of them may
        # name the same large object: what a read allocates is not what is declared.
        return ("holds variable-length items (no Keras or kerasave weight does): what "
                "reading them allocates is not bounded by what they declare")
    space = dsid.get_space()
    if space.get_simple_extent_type() != h5s.SIMPLE:
        return None  # a scalar or an empty (null) dataspace
    shape = tuple(space.shape)
    itemsize = dsid.get_type().get_size()
    declared = math.prod(shape) * itemsize
    if declared == 0:
        return None
    what = f"declares shape {shape} ({_size(declared)})"
    layout = plist.get_layout()
    if layout == h5d.CONTIGUOUS:
        offset = dsid.get_offset()
        if offset is None:  # never written: every value is the fill value
            return (f"{what} but stores none of them (a shape bomb?)"
                    if declared > _RATIO_FLOOR else None)
        if offset + declared > filesize:
            return f"{what} running past the end of the file ({_size(filesize)})"
        return None
    if layout != h5d.CHUNKED:
        return None  # compact: the values are inside the object header
    stored = dsid.get_storage_size()
    if declared > _RATIO_FLOOR and declared > _H5_MAX_EXPANSION * stored:
        return f"{what} from {_size(stored)} stored (a shape bomb?)"
    chunk = math.prod(plist.get_chunk()) * itemsize
    if chunk > max(declared, _H5_CHUNK_FLOOR):
        return f"{what} in chunks of {_size(chunk)}, larger than the dataset"
    # A filter (deflate) inflates a stored chunk to whatever size it decodes to,
    # whatever the chunk's: so no stored chunk may be larger than a chunk's worst
    # case compressed, and (deflate) none may decode to more than a chunk.
    bound = chunk + (chunk >> 12) + (chunk >> 14) + (chunk >> 25) + 64
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    bad: list[str] = []

    def visit(info: Any) -> None:
        if bad:
            return
        if info.size > bound or info.byte_offset + info.size > filesize:
            bad.append(f"{what} with a chunk of {_size(info.size)} stored "
                       f"(at most {_size(bound)} fit a chunk of {_size(chunk)})")
        elif filters == [h5z.FILTER_DEFLATE] or filters == [h5z.FILTER_SHUFFLE,
                                                            h5z.FILTER_DEFLATE]:
            if _inflates_past(dsid, info, chunk):
                bad.append(f"{what} with a chunk that inflates past its {_size(chunk)} "
                           "(a decompression bomb?)")

    if filters and hasattr(dsid, "chunk_iter"):
        dsid.chunk_iter(visit)
    elif filters:  # (HDF5 before 1.12.3)
        for i in range(dsid.get_num_chunks()):
            visit(dsid.get_chunk_info(i))
    return bad[0] if bad else None


def _inflates_past(dsid: Any, info: Any, chunk: int) -> bool:
    """Whether a deflated chunk decodes to more than ``chunk`` bytes (decoded at most
    ``chunk`` bytes at a time, into memory its read would take anyway)."""
    if info.filter_mask:
        return False  # stored unfiltered: its size was bounded above
    _, raw = dsid.read_direct_chunk(info.chunk_offset)
    stream = zlib.decompressobj()
    try:
        stream.decompress(raw, chunk)
        return bool(stream.decompress(stream.unconsumed_tail, 1))
    except zlib.error:
        return False  # damaged: HDF5's own read reports it


def check_zip(zf: zipfile.ZipFile, source: str | Path) -> None:
    """UnsafeArtifactError for members that escape the archive or are zip bombs, one
    by one or all together (many members just under the floor: Keras extracts an
    archive's assets whole)."""
    declared = sum(info.file_size for info in zf.infolist())
    stored = sum(info.compress_size for info in zf.infolist())
    if declared > _RATIO_FLOOR and declared > _MAX_RATIO * max(stored, 1):
        raise UnsafeArtifactError(
            f"the archive's {len(zf.infolist())} members declare {declared:,} bytes from "
            f"{stored:,} compressed (a zip bomb?)", path=source)
    for info in zf.infolist():
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in info.filename:
            raise UnsafeArtifactError(
                f"the archive member {info.filename!r} points outside the archive", path=source
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * max(
                info.compress_size, 1):
            raise UnsafeArtifactError(
                f"the archive member {info.filename!r} declares {info.file_size:,} bytes from "
                f"{info.compress_size:,} compressed (a zip bomb?)",
                path=source,
            )
