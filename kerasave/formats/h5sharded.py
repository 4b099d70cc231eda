"""Keras' sharded HDF5 weights: ``m.weights.json`` and its shards ``m_00000.weights.h5``...

What ``model.save_weights("m.weights.json", max_shard_size=GB)`` writes (Keras 3.10
and later; 3.12, the oldest kerasave supports, has it): a JSON *shard map* naming,
for each variable group (``/layers/dense/vars``), the shard files that hold it,
and HDF5 shards in Keras' weights-file layout, each at most ``max_shard_size`` GB.
kerasave writes it through Keras' own writer and names the shards as Keras does
(plain Keras opens ``<name>_00000.weights.h5`` whatever its map says), so
``model.load_weights("m.weights.json")`` reads kerasave's files and kerasave reads
Keras'.

Every shard is a member of the artifact: the manifest lists each with its size
and CRC32C, and a save replaces all of them or none. Reading checks, before a
byte of data is read: that the map is JSON of the expected form and names only
plain files beside it (no path, no link leading out of its directory), that every
shard is an HDF5 file whose datasets fit in it and reach nothing outside it
(``kerasave._safety.check_h5``), that every dataset sits where the map says and
nowhere twice, and that their shapes and dtypes fit the model. Loading then goes
through Keras' own reader, all or nothing.

kerasave records in the map, under ``"kerasave"`` (Keras reads only
``weight_map``), the model's build shapes, so an unbuilt model can be loaded
into, and the versions that wrote it.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._errors import (
    ArchitectureMismatchError,
    CorruptArtifactError,
    KerasaveError,
    NotSerializableError,
    UnknownFormatError,
    UnsafeArtifactError,
    foreign_errors,
)
from kerasave._fastpaths.patches import initialize_rest
from kerasave._report import Check, Variable
from kerasave._runtime.lazy import keras
from kerasave.compare.state import Snapshot, empty_twin, keras_warnings
from kerasave.compare.verify import compare_arrays, optimizer_of, pair_variables, to_numpy, view
from kerasave.formats._base import (
    Contents,
    ReadArray,
    WeightsFormat,
    build_if_needed,
    require_built,
    versions_now,
)
from kerasave.formats.h5weights import (
    _bfloat16,
    _datasets,
    _dtype_name,
    _layout_problem,
    _position,
    open_h5,
    optimizer_names,
)

__all__ = ["ShardedWeightsHandler", "DEFAULT_MAX_SHARD_SIZE", "is_shard_map", "is_json_object",
           "read_map", "stored_arrays"]

MAP_SUFFIX = ".weights.json"
DEFAULT_MAX_SHARD_SIZE = 5.0  # GB, as Keras' ShardedH5IOStore
_TAIL = re.compile(r"_(\d{5,})\.weights\.h5")  # what follows the stem in a shard's name
_MAP_LIMIT = 64 * 2**20  # bytes: a shard map larger than this is not one
_OWN = "kerasave"
# A save's temporary, ``.<name>.kerasave-tmp-<token><suffix>`` (kerasave.store.transaction),
# and the previous version an interrupted commit left, ``.<name>.kerasave-prev<suffix>``
# (kerasave.store.manifest.backup_path): their shards carry their own stem.
_TEMPORARY = re.compile(r"\.(.+)\.kerasave-(?:tmp-[0-9a-f]{12}|prev)" + re.escape(MAP_SUFFIX))
# Bits per value as Keras counts them against max_shard_size (keras.src.utils.dtype_utils)
_BITS = {**{f"float{i}": i for i in (16, 32, 64)}, **{f"int{i}": i for i in (8, 16, 32, 64)},
         **{f"uint{i}": i for i in (8, 16, 32, 64)}, "bfloat16": 16, "bool": 1}


def _stem(name: str) -> str:
    """The shards' common name: the map's, less ``.weights.json``."""
    return name[: -len(MAP_SUFFIX)] if name.endswith(MAP_SUFFIX) else name


def _keras_stem(name: str) -> str:
    """The stem Keras gives the shards of a map of this name (ShardedH5IOStore)."""
    return Path(name).stem.replace(".weights", "")


def _final_name(name: str) -> str:
    """The artifact a map of this name stands for: the target of a save's temporary or
    of an interrupted commit's backup, or itself."""
    match = _TEMPORARY.fullmatch(name)
    return match.group(1) if match else name


def _require_keras_sharding(path: Path) -> None:
    """UnknownFormatError when this Keras has no sharded weights (before 3.10; kerasave's
    oldest, 3.12, has them): kerasave writes and reads them through Keras' own code."""
    if "max_shard_size" not in inspect.signature(keras.Model.save_weights).parameters:
        raise UnknownFormatError(
            f"Keras {keras.__version__} has no sharded weights (Keras 3.10 and later write "
            "and read .weights.json); save to a .weights.h5 file instead", path=path)


def _shard_name(stem: str, index: int) -> str:
    return f"{stem}_{index:05d}.weights.h5"


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in the file at ``path``; None for anything else, or a file
    larger than a shard map."""
    try:
        if not path.is_file() or path.stat().st_size > _MAP_LIMIT:
            return None
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
            if not head.startswith(b"{"):
                return None
            data = json.loads(head + f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_json_object(path: Path) -> bool:
    return _json_object(path) is not None


def is_shard_map(path: Path) -> bool:
    """Whether ``path`` is a JSON object with a ``weight_map`` (read only when small;
    a ``weight_map`` of another form is a damaged map, which ``read_map`` refuses)."""
    data = _json_object(path)
    return data is not None and "weight_map" in data


@dataclass(frozen=True)
class _Stored:
    """One dataset of the artifact: where it lies, and what it declares."""

    file: Path
    key: str  # the dataset's path in its shard
    shape: tuple[int, ...]
    dtype: str

    # (what ``h5weights._layout_problem`` reads of an array)
    @property
    def attrs(self) -> dict[str, str]:
        return {"dtype": "bfloat16"} if self.dtype == "bfloat16" else {}


@dataclass(frozen=True)
class ShardMap:
    """A shard map read and checked: its groups, the files it names, kerasave's notes."""

    path: Path
    groups: dict[str, tuple[str, ...]]  # "/layers/dense/vars" -> shard names, as written
    files: dict[str, Path]  # shard name as written -> the file it is (beside ``path``)
    own: dict[str, Any]  # what kerasave recorded ({} for a map Keras wrote)


def read_map(path: Path) -> ShardMap:
    """The shard map at ``path``, every name in it checked (see the module's docstring).

    Raises:
        CorruptArtifactError: not a shard map, or a shard it names is missing.
        UnsafeArtifactError: it names a file outside its directory.
    """
    with foreign_errors(path, "unreadable shard map"):
        size = path.stat().st_size
        if size > _MAP_LIMIT:
            raise CorruptArtifactError(f"the shard map has {size:,} bytes, more than a map "
                                       f"holds ({_MAP_LIMIT:,})", path=path)
        data = json.loads(path.read_bytes())
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise CorruptArtifactError("not a Keras shard map: expected a JSON object with a "
                                   "'weight_map'", path=path)
    own = data.get(_OWN)
    own = own if isinstance(own, dict) else {}
    final = _final_name(path.name)
    stem = _stem(final) if final != path.name else None
    groups: dict[str, tuple[str, ...]] = {}
    files: dict[str, Path] = {}
    for group, names in weight_map.items():
        names = [names] if isinstance(names, str) else names
        if (not isinstance(group, str) or not isinstance(names, list) or not names
                or not all(isinstance(n, str) for n in names)):
            raise CorruptArtifactError(
                f"the shard map's entry {group!r}: {names!r} is not a group and a list of "
                "shard file names", path=path)
        groups[group] = tuple(names)
        for name in names:
            if name not in files:
                files[name] = _resolve(path, name, stem)
    return ShardMap(path, groups, files, own)


def _resolve(path: Path, name: str, stem: str | None) -> Path:
    """The file the map at ``path`` means by ``name``: beside it, never elsewhere.

    A map kerasave wrote names its shards ``<stem>_NNNNN.weights.h5``, as the final
    artifact's are called; at a save's temporary or an interrupted commit's backup
    (``stem``: the final artifact's), the same shards carry that map's own stem.
    """
    if (not name or name in (".", "..") or any(c in name for c in "/\\\0")
            or os.path.isabs(name)):
        raise UnsafeArtifactError(
            f"the shard map names {name!r}, which is not a file beside it: loading would "
            "read outside the artifact's directory", path=path)
    if stem is not None and name.startswith(stem) and _TAIL.fullmatch(name[len(stem):]):
        file = path.with_name(_stem(path.name) + name[len(stem):])
    else:
        file = path.with_name(name)
    if file == path or file.name == path.name + ".kerasave.json":
        raise CorruptArtifactError(f"the shard map names itself or its manifest ({name!r}) "
                                   "as a shard", path=path)
    try:
        info = file.lstat()
    except FileNotFoundError:
        raise CorruptArtifactError(f"the shard {name} that the map names is missing",
                                   path=path) from None
    except OSError as exc:
        raise CorruptArtifactError(f"the shard {name}: {exc}", path=path) from exc
    if os.path.islink(file):
        target = os.path.realpath(file)
        if os.path.dirname(target) != os.path.realpath(path.parent):
            raise UnsafeArtifactError(
                f"the shard {name} is a link to {target}, outside the artifact's directory",
                path=path)
    elif not os.path.isfile(file) or info.st_size == 0:
        raise CorruptArtifactError(f"the shard {name} is not a file with data", path=path)
    return file


def stored_arrays(smap: ShardMap, *, check: bool = True) -> dict[str, _Stored]:
    """Every dataset the shards hold, by its name in Keras' layout
    (``layers/dense/vars/0``), each checked to sit where the map says and only there;
    nothing read but the files' structure (``check``: their safety walk too)."""
    placed = {(group, name) for group, names in smap.groups.items() for name in names}
    found: dict[str, _Stored] = {}
    seen_groups: set[tuple[str, str]] = set()
    for name, file in smap.files.items():
        with open_h5(file, check=check) as f:
            for key, dataset in _datasets(f).items():
                group = "/" + key.rsplit("/", 1)[0] if "/" in key else "/"
                if (group, name) not in placed:
                    raise CorruptArtifactError(
                        f"the shard {name} holds /{key}, which the map does not place there",
                        path=file)
                if key in found:
                    raise CorruptArtifactError(
                        f"/{key} is in two shards, {found[key].file.name} and {name}",
                        path=smap.path)
                seen_groups.add((group, name))
                found[key] = _Stored(file, key, tuple(int(d) for d in dataset.shape),
                                     _dtype_name(dataset))
    for group, name in sorted(placed - seen_groups):
        with open_h5(smap.files[name], check=False) as f:
            if group.strip("/") not in f:
                raise CorruptArtifactError(
                    f"the map places {group} in the shard {name}, which has no such group",
                    path=smap.path)
    return found


def _read_all(stored: dict[str, _Stored]) -> Iterator[tuple[str, np.ndarray]]:
    """Every dataset's values, exactly as stored (bfloat16 as Keras marks it), by
    name, each shard opened once."""
    by_file: dict[Path, list[tuple[str, _Stored]]] = {}
    for name, item in stored.items():
        by_file.setdefault(item.file, []).append((name, item))
    for file, items in by_file.items():
        with h5py.File(file, "r") as f:
            for name, item in items:
                yield name, _read_one(f, item)


def _read_one(f: h5py.File, item: _Stored) -> np.ndarray:
    """One dataset's values (of the open shard ``f``), exactly as stored."""
    with foreign_errors(item.file, f"could not read the array {item.key}"):  # (h5py's words)
        value = np.asarray(f[item.key])
    if item.dtype == "bfloat16" and value.dtype == np.dtype("V2"):
        value = value.view(_bfloat16())
    return value


@contextlib.contextmanager
def _reading(stored: dict[str, _Stored]) -> Iterator[ReadArray]:
    """One dataset at a time, by name; each shard opened at its first read, once."""
    with contextlib.ExitStack() as opened:
        files: dict[Path, h5py.File] = {}

        def read(name: str) -> np.ndarray:
            item = stored[name]
            if item.file not in files:
                files[item.file] = opened.enter_context(h5py.File(item.file, "r"))
            return _read_one(files[item.file], item)

        yield read


@contextlib.contextmanager
def _keras_view(smap: ShardMap) -> Iterator[Path]:
    """A map and links to its shards in a private folder, named as Keras' reader wants
    them (it opens ``<stem>_00000.weights.h5`` first, whatever the map says): what
    Keras reads is exactly the files kerasave checked."""
    folder = Path(tempfile.mkdtemp(prefix="kerasave-shards-"))
    try:
        names = {}
        for index, (name, file) in enumerate(smap.files.items()):
            names[name] = _shard_name("view", index)
            os.symlink(os.path.realpath(file), folder / names[name])
        if not names:  # (Keras opens the first shard even when the map names none)
            with h5py.File(folder / _shard_name("view", 0), "w"):
                pass
        weight_map = {g: [names[n] for n in ns] for g, ns in smap.groups.items()}
        target = folder / f"view{MAP_SUFFIX}"
        target.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}),
                          encoding="utf-8")
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ShardedWeightsHandler(WeightsFormat):
    """Keras' sharded HDF5 weights (see the module's docstring)."""

    name = "h5-sharded"
    can_hold_optimizer = True
    array_names = "Keras' weights-file layout"
    suffixes = (MAP_SUFFIX,)
    temp_suffix = MAP_SUFFIX
    description = "weights only, in HDF5 shards"

    def __init__(self, max_shard_size: float | None = None) -> None:
        self.max_shard_size = max_shard_size

    def with_options(self, *, max_shard_size: float | None) -> ShardedWeightsHandler:
        """This handler writing shards of at most ``max_shard_size`` GB."""
        if max_shard_size is None:
            return self
        if isinstance(max_shard_size, bool) or not isinstance(max_shard_size,
                                                               (int, float, np.number)):
            raise TypeError("max_shard_size is a size in GB (a number). Received: "
                            f"max_shard_size={max_shard_size!r}")
        if not math.isfinite(float(max_shard_size)) or max_shard_size <= 0:
            raise ValueError("max_shard_size must be a positive number of GB. Received: "
                             f"max_shard_size={max_shard_size!r}")
        return ShardedWeightsHandler(float(max_shard_size))

    # -- the files -------------------------------------------------------------------

    def _shards(self, path: Path) -> list[Path]:
        """The shards named after the map at ``path`` (``<stem>_NNNNN.weights.h5``)."""
        if not path.parent.is_dir():
            return []
        stem = _stem(path.name)
        found = []
        for p in glob.glob(glob.escape(str(path.parent / stem)) + "_*.weights.h5"):
            match = _TAIL.fullmatch(os.path.basename(p)[len(stem):])
            if match:
                found.append((int(match.group(1)), Path(p)))
        return [p for _, p in sorted(found)]

    def members(self, path: Path) -> list[Path]:
        # The map goes last: it is what makes the shards an artifact.
        return self._shards(path) + super().members(path)

    def member_tail(self, path: Path, member: Path) -> str:
        stem = _stem(path.name)
        rest = member.name[len(stem):]
        if member != path and member.name.startswith(stem) and _TAIL.fullmatch(rest):
            return rest
        return super().member_tail(path, member)

    def member_at(self, path: Path, tail: str) -> Path:
        if _TAIL.fullmatch(tail):
            return path.with_name(_stem(path.name) + tail)
        return super().member_at(path, tail)

    def sniff(self, path: Path) -> bool:
        return is_shard_map(path)

    # -- writing ---------------------------------------------------------------------

    def preflight(self, model: keras.Model, path: Path) -> None:
        require_built(model, path)
        _require_keras_sharding(path)
        if not path.name.endswith(MAP_SUFFIX):
            raise UnknownFormatError(
                f"sharded weights are a map whose name ends in {MAP_SUFFIX} (Keras reads "
                f"them by that suffix); received {path.name!r}", path=path)
        if _keras_stem(path.name) != _stem(path.name):
            raise UnknownFormatError(
                f"Keras looks for the shards of {path.name!r} as "
                f"{_shard_name(_keras_stem(path.name), 0)!r}: use a name with '.weights' "
                f"only in its {MAP_SUFFIX} suffix", path=path)
        limit = (self.max_shard_size or DEFAULT_MAX_SHARD_SIZE) * 1024**3
        optimizer = optimizer_of(model)
        for variable in list(model.weights) + list(optimizer.variables if optimizer else []):
            bits = _BITS.get(str(getattr(variable, "dtype", "")))
            size = math.prod(tuple(variable.shape)) * bits / 8 if bits else 0
            if size > limit:
                raise NotSerializableError(
                    f"the variable {getattr(variable, 'path', variable.name)} takes "
                    f"{size / 1024**3:.3g} GB, more than max_shard_size="
                    f"{limit / 1024**3:.3g} GB: no shard can hold it (Keras does not split "
                    "a variable); raise max_shard_size", path=path)

    def write(self, model: keras.Model, path: Path) -> None:
        """Keras' own writer, then its shards renamed after the map at ``path`` and
        the map naming them as the final artifact's will be called."""
        final_stem = _stem(_final_name(path.name))
        keras_stem = _keras_stem(path.name)  # what Keras calls the shards it writes here
        gb = self.max_shard_size or DEFAULT_MAX_SHARD_SIZE
        with keras_warnings():
            model.save_weights(str(path), max_shard_size=gb)
        data = json.loads(path.read_text(encoding="utf-8"))
        written = {}
        for p in path.parent.glob(glob.escape(keras_stem) + "_*.weights.h5"):
            match = _TAIL.fullmatch(p.name[len(keras_stem):])
            if match:
                written[p.name] = int(match.group(1))
        weight_map = data.get("weight_map") or {}
        named = {n for names in weight_map.values()
                 for n in ([names] if isinstance(names, str) else names)}
        if named - set(written):
            raise KerasaveError(f"Keras' shard map names files it did not write: "
                                f"{sorted(named - set(written))}", path=path)
        renamed = {}
        for index, old in enumerate(sorted(named, key=written.__getitem__)):
            os.replace(path.with_name(old), path.with_name(_shard_name(_stem(path.name), index)))
            renamed[old] = _shard_name(final_stem, index)
        for old in set(written) - named:  # (a shard Keras opened and never filled)
            path.with_name(old).unlink()
        data["weight_map"] = {g: [renamed[n] for n in ([ns] if isinstance(ns, str) else ns)]
                              for g, ns in weight_map.items()}
        data[_OWN] = {"versions": versions_now(), "build_config": model.get_build_config()}
        path.write_text(json.dumps(data, indent=4, default=list) + "\n", encoding="utf-8")

    # -- reading ---------------------------------------------------------------------

    def _checked(self, model: keras.Model, path: Path, *,
                 check: bool = True) -> tuple[ShardMap, dict[str, _Stored], list[Check]]:
        """The map and what the shards hold, checked against ``model`` (built first from
        the recorded shapes, and its optimizer too when the file holds its state)."""
        smap = read_map(path)
        stored = stored_arrays(smap, check=check)
        build = smap.own.get("build_config")
        notes = build_if_needed(model, build if isinstance(build, dict) else None, path)
        optimizer = optimizer_of(model)
        saved_opt = {k: s for k, s in stored.items() if k.startswith("optimizer/")}
        if optimizer is not None and not optimizer.built and len(saved_opt) > len(
                optimizer.variables):
            optimizer.build(model.trainable_variables)
            notes.append(Check("build optimizer", True, "built the optimizer to receive its state"))
        saved = {k: s for k, s in stored.items() if not k.startswith("optimizer/")}
        problem = _layout_problem(saved, list(model.weights), "model", "the model")
        if problem is None and optimizer is not None and saved_opt:
            problem = _layout_problem({k[len("optimizer/"):]: s for k, s in saved_opt.items()},
                                      list(optimizer.variables), "optimizer",
                                      f"the model's {type(optimizer).__name__}",
                                      prefix="optimizer/")
        if problem:
            raise ArchitectureMismatchError(problem, path=path)
        return smap, stored, notes

    def load(self, model: keras.Model, path: Path, *, checksummed: bool = False,
             rollback: bool = True, check: bool = True) -> list[Check]:
        # (``checksummed`` changes nothing here: HDF5 holds no checksums to skip.)
        _require_keras_sharding(path)
        smap, stored, checks = self._checked(model, path, check=check)
        snapshot = Snapshot(model) if rollback else None  # Keras assigns as it reads
        try:
            with _keras_view(smap) as target, keras_warnings() as caught:
                model.load_weights(str(target))
            skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
            if skipped:
                raise ArchitectureMismatchError(skipped[0], path=path)
        except BaseException:  # all or nothing: the model is put back as it was
            if snapshot is not None:
                snapshot.restore()
            # (a ValueError is Keras' word for a shape or a count that does not fit)
            with foreign_errors(path, "could not read the weights", at="assign"):
                raise
        checks.append(Check("model variables", True,
                            f"{len(model.weights)} restored from {len(smap.files)} shard(s)"))
        optimizer = optimizer_of(model)
        if optimizer is not None and any(k.startswith("optimizer/") for k in stored):
            checks.append(Check("optimizer variables", True,
                                f"{len(optimizer.variables)} restored"))
        return checks

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """Every model variable loaded into a fresh twin by Keras' reader, and the
        optimizer's state in the shards against the model's optimizer, bit for bit."""
        checks = self._check_model(model, path, own=own)
        if all(c.ok for c in checks):
            checks += self._check_optimizer(model, path, own=own)
        return checks

    def _check_model(self, model: keras.Model, path: Path, *, own: bool) -> list[Check]:
        twin, empty = empty_twin(model)  # no initializers run: the file fills it
        try:
            if twin is not None:
                with keras_warnings():
                    self.load(twin, path, rollback=False, check=not own)
                initialize_rest(empty)
                return [Check("load", True, "into a fresh model of the same architecture"),
                        compare_arrays("model variables",
                                       pair_variables(model.weights, twin.weights))]
            # No config to build a twin from (subclassed model): load into the model
            # itself and put every value back afterwards.
            before = [(getattr(v, "path", v.name), to_numpy(v)) for v in model.weights]
            snapshot = Snapshot(model)
            try:
                with keras_warnings():
                    self.load(model, path, check=not own)
                loaded = [to_numpy(v) for v in model.weights]
            finally:
                snapshot.restore()
        except (ArchitectureMismatchError, CorruptArtifactError) as exc:
            return [Check("load", False, str(exc))]
        return [Check("load", True, "into the model itself (no config for a fresh copy); "
                      "values put back"),
                compare_arrays("model variables",
                               [(n, b, a) for (n, b), a in zip(before, loaded)])]

    def _check_optimizer(self, model: keras.Model, path: Path, *, own: bool) -> list[Check]:
        """The shards' optimizer state (``optimizer/vars/N``, in the optimizer's order)."""
        stored = stored_arrays(read_map(path), check=not own)
        saved = {k: s for k, s in stored.items() if k.startswith("optimizer/")}
        if not saved:
            return []
        optimizer = optimizer_of(model)
        live = list(optimizer.variables) if optimizer is not None else []
        if len(saved) != len(live):
            return [Check("optimizer variables", False,
                          f"the shards hold {len(saved)} optimizer variables, the model's "
                          f"optimizer has {len(live)}")]
        read = dict(_read_all(saved))
        pairs = [(getattr(v, "path", v.name), view(v), read[k])
                 for v, k in zip(live, sorted(saved, key=_position))]
        return [compare_arrays("optimizer variables", pairs)]

    def contents(self, path: Path) -> Contents:
        smap = read_map(path)
        stored = stored_arrays(smap)
        variables = tuple(Variable(k, s.shape, s.dtype) for k, s in stored.items())
        versions = smap.own.get("versions")
        return Contents(variables, any(k.startswith("optimizer/") for k in stored),
                        {str(k): str(v) for k, v in versions.items()}
                        if isinstance(versions, dict) else {},
                        optimizer_names(variables))

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        yield from _read_all(stored_arrays(read_map(path)))

    def reader(self, path: Path) -> contextlib.AbstractContextManager[ReadArray]:
        return _reading(stored_arrays(read_map(path)))
