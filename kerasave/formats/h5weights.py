"""Keras HDF5 weights: ``.weights.h5``, ``.h5`` and ``.hdf5``.

Written by Keras' own ``save_weights``, so plain Keras reads the files (rename
them to ``.weights.h5`` for ``model.load_weights``). kerasave adds two root
attributes Keras ignores: the model's build shapes, so an unbuilt model can be
loaded into, and the versions that wrote the file. Files in the Keras 2 layout
(``layer_names``) load too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._errors import (
    ArchitectureMismatchError,
    CorruptArtifactError,
    KerasaveError,
    foreign_errors,
)
from kerasave._fastpaths import Unsupported, attempt, savinglib
from kerasave._fastpaths.h5read import Source
from kerasave._fastpaths.legacy import load_h5_weights, named
from kerasave._fastpaths.patches import Recorded, initialize_rest
from kerasave._report import Check, Variable
from kerasave._runtime.lazy import keras
from kerasave._safety import check_h5
from kerasave.compare.lost import config_losses, refuse_rnn_states
from kerasave.compare.state import Snapshot, empty_twin, keras_warnings, model_twin
from kerasave.compare.verify import (
    compare_arrays,
    optimizer_of,
    pair_variables,
    recorded_reader,
    to_numpy,
    view,
)
from kerasave.formats._base import (
    Contents,
    ReadArray,
    WeightsFormat,
    build_if_needed,
    passed,
    require_built,
    versions_now,
)

__all__ = ["H5WeightsHandler", "open_h5", "is_hdf5", "h5_variables", "h5_arrays",
           "h5_reading", "optimizer_names"]

_MAGIC = b"\x89HDF\r\n\x1a\n"


def _bfloat16() -> np.dtype:
    import ml_dtypes  # (a second to import: only when a file holds bfloat16)

    return np.dtype(ml_dtypes.bfloat16)


BUILD_ATTR = "kerasave_build_config"
VERSIONS_ATTR = "kerasave_versions"


def is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == _MAGIC
    except OSError:
        return False


def open_h5(path: Path, mode: str = "r", *, check: bool = True) -> h5py.File:
    """The HDF5 file, refused if unsafe (``check=False``: checked already, by this
    process, and nobody else writes it: a save's own temporary)."""
    if not is_hdf5(path):
        raise CorruptArtifactError("not an HDF5 file (bad signature)", path=path)
    with foreign_errors(path, "unreadable HDF5 file"):
        f = h5py.File(path, mode)
    try:
        if check:
            check_h5(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    group.visititems(visit)
    return found


def h5_variables(group: h5py.Group) -> tuple[Variable, ...]:
    """Every array in an HDF5 group, as inspect() lists them."""
    return tuple(Variable(name, tuple(int(d) for d in d_.shape), str(d_.dtype))
                 for name, d_ in _datasets(group).items())


def h5_arrays(group: h5py.Group, path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every array in an HDF5 group (of the file at ``path``), read, by the names
    ``h5_variables`` gives."""
    for name, dataset in _datasets(group).items():
        yield name, _stored(dataset, name, path)


def h5_reading(group: h5py.Group, path: Path) -> ReadArray:
    """One array of an HDF5 group (of the file at ``path``, open and checked) at a
    time, by the names ``h5_variables`` gives; ``KeyError`` for any other."""
    datasets = _datasets(group)
    return lambda name: _stored(datasets[name], name, path)


def _stored(dataset: h5py.Dataset, name: str, path: Path) -> np.ndarray:
    """A dataset's values, exactly as stored (bfloat16 as Keras marks it)."""
    with foreign_errors(path, f"could not read the array {name}"):  # (h5py's words for damage)
        value = np.asarray(dataset)
    if _dtype_name(dataset) == "bfloat16" and value.dtype == np.dtype("V2"):
        value = value.view(_bfloat16())  # the opaque bytes Keras stores, as it marks them
    return value


def optimizer_names(variables: tuple[Variable, ...]) -> tuple[str, ...]:
    """Which of an HDF5 file's arrays are optimizer state: Keras 3's ``optimizer/``
    group, or the legacy whole-model ``optimizer_weights/``."""
    return tuple(v.name for v in variables
                 if v.name.startswith(("optimizer/", "optimizer_weights/")))


def _is_legacy(f: h5py.File) -> bool:
    return "layer_names" in f.attrs or "model_weights" in f


def _legacy_group(f: h5py.File) -> h5py.Group:
    return f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f


def _dtype_name(array: Any) -> str:
    """A variable's or dataset's dtype; Keras stores bfloat16 as 2 opaque bytes, marked."""
    attrs = getattr(array, "attrs", None)
    if attrs is not None and attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        return "bfloat16"
    return str(np.dtype(array.dtype))


def _layout(array: Any) -> tuple[tuple[int, ...], str]:
    if hasattr(array, "numpy") and not isinstance(array, keras.Variable):
        array = to_numpy(array)  # (a tensor a layer stores: LoRA merged into a kernel)
    return tuple(int(d) for d in array.shape), _dtype_name(array)


def stored_entries(model: keras.Model) -> dict[str, Any]:
    """What Keras' ``save_weights`` writes for ``model``, by dataset name: every
    variable, and what layers store of their own (``save_own_variables``: IDF
    weights, a custom layer's arrays, a ``LossScaleOptimizer``'s inner optimizer)."""

    def public() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(tmp) / "model.weights.h5"
            model.save_weights(str(where))
            with h5py.File(where, "r") as f:
                found = dict(h5_arrays(f, where))
        # Each array given as the variable it was written from, where one holds the
        # same bytes (a variable of equal value and layout stands for another alike):
        # what is said about it then names the variable.
        optimizer = optimizer_of(model)
        free = list(model.weights) + (list(optimizer.variables) if optimizer else [])
        for name, array in found.items():
            for i, variable in enumerate(free):
                if _layout(variable) == _layout(array) and \
                        view(variable).tobytes() == array.tobytes():
                    found[name] = free.pop(i)
                    break
        return found

    return attempt("keras_writer", lambda: savinglib.stored_entries(model), public,
                   passthrough=(KerasaveError,))


def _shape_counts(arrays: Any) -> Counter[tuple[tuple[int, ...], str]]:
    return Counter(_layout(a) for a in arrays)


def _unmatched(named: list[tuple[str, Any]], other: Counter[tuple[tuple[int, ...], str]]) -> str:
    """The first of ``named`` whose shape and dtype ``other`` lacks, as ``name (2, 3) float32``."""
    left = Counter(other)
    out = []
    for name, array in named:
        layout = _layout(array)
        if left[layout] > 0:
            left[layout] -= 1
        else:
            out.append(f"{name} {layout[0]} {layout[1]}")
    shown = ", ".join(out[:3]) + (f" and {len(out) - 3} more" if len(out) > 3 else "")
    return shown or "nothing"


def _layout_problem(saved: dict[str, Any], live: list[Any] | dict[str, Any], what: str,
                    holder: str, prefix: str = "") -> str | None:
    """None when the file's arrays and the live variables (or, by name, the arrays
    the model writes) have the same shapes and dtypes; else which of them have no
    counterpart on the other side."""
    values = list(live.values()) if isinstance(live, dict) else live
    if _shape_counts(saved.values()) == _shape_counts(values):
        return None
    saved_named = [(prefix + name, d) for name, d in saved.items()]
    live_named = ([(v.path if isinstance(v, keras.Variable) else k, v)
                   for k, v in live.items()] if isinstance(live, dict)
                  else [(getattr(v, "path", None) or v.name, v) for v in live])
    live = values
    return (f"the file holds {len(saved)} {what} arrays, {holder} has {len(live)} variables; "
            f"only in the file: {_unmatched(saved_named, _shape_counts(live))}; "
            f"only in the model: {_unmatched(live_named, _shape_counts(saved.values()))}")


class H5WeightsHandler(WeightsFormat):
    name = "h5"
    can_hold_optimizer = True
    array_names = "Keras' weights-file layout"
    suffixes = (".weights.h5", ".h5", ".hdf5")
    temp_suffix = ".weights.h5"

    def preflight(self, model: keras.Model, path: Path) -> None:
        require_built(model, path)
        refuse_rnn_states(model, path, "HDF5 weights")

    def sniff(self, path: Path) -> bool:
        # A legacy whole-model file holds weights too: load_weights reads it.
        return path.is_file() and is_hdf5(path)

    def write(self, model: keras.Model, path: Path) -> None:
        def public() -> None:
            path.unlink(missing_ok=True)
            model.save_weights(str(path))

        attempt("keras_writer", lambda: savinglib.write_weights(model, path), public,
                passthrough=(KerasaveError,))
        with h5py.File(path, "r+") as f:
            f.attrs[BUILD_ATTR] = json.dumps(model.get_build_config(), default=list)
            f.attrs[VERSIONS_ATTR] = json.dumps(versions_now())

    # -- loading -------------------------------------------------------------------

    def _prepare(self, model: keras.Model, f: h5py.File, path: Path) -> list[Check]:
        raw = f.attrs.get(BUILD_ATTR)
        notes = build_if_needed(model, json.loads(raw) if raw is not None else None, path)
        optimizer = optimizer_of(model)
        saved_opt = len(_datasets(f["optimizer"])) if "optimizer" in f else 0
        if optimizer is not None and not optimizer.built and saved_opt > len(optimizer.variables):
            optimizer.build(model.trainable_variables)
            notes.append(Check("build optimizer", True, "built the optimizer to receive its state"))
        return notes

    def _structure_problem(self, model: keras.Model, f: h5py.File) -> str | None:
        """Whether the file holds exactly the model's variables (and optimizer's)."""
        if _is_legacy(f):
            return _layout_problem(_datasets(_legacy_group(f)), list(model.weights), "layers",
                                   "the model")
        # What Keras writes for the model: its weights and what layers store of their
        # own (no RNG seed states), and its optimizer's (an inner one's too).
        entries = stored_entries(model)
        saved = {k: d for k, d in _datasets(f).items() if not k.startswith("optimizer/")}
        problem = _layout_problem(saved, {k: v for k, v in entries.items()
                                          if not k.startswith("optimizer/")},
                                  "model", "the model")
        optimizer = optimizer_of(model)
        if problem is None and optimizer is not None and "optimizer" in f:
            problem = _layout_problem(_datasets(f["optimizer"]),
                                      {k: v for k, v in entries.items()
                                       if k.startswith("optimizer/")},
                                      "optimizer", f"the model's {type(optimizer).__name__}",
                                      prefix="optimizer/")
        return problem

    def _stage(self, model: keras.Model, path: Path, legacy: bool,
               rollback: bool) -> tuple[Any, Snapshot | None]:
        """Every value of the file read and checked: ``(apply, snapshot)``, where
        ``apply()`` assigns them all (fast path ``keras_reader``, which reads them
        staged). Its public twin, Keras' own reader, assigns as it goes: it has
        assigned them when this returns, and ``snapshot`` puts back the values
        it replaced (put back already if it raised)."""

        def public() -> tuple[Any, Snapshot | None]:
            snapshot = Snapshot(model) if rollback else None
            try:
                with open_h5(path) as f:
                    self._assign(model, f, path)
            except BaseException:
                if snapshot is not None:
                    snapshot.restore()
                raise
            return (lambda: None), snapshot

        if legacy:  # (Keras 2's layout: Keras' own legacy loader decides)
            return public()
        return attempt("keras_reader", lambda: (savinglib.read_weights(model, path), None),
                       public, passthrough=(KerasaveError,))

    def _assign(self, model: keras.Model, f: h5py.File, path: Path) -> None:
        if _is_legacy(f):
            load_h5_weights(model, path, _legacy_group(f))
            return
        with named(path, (".weights.h5",)) as linked:  # (Keras' own layout: only by this name)
            model.load_weights(linked)

    def load(self, model: keras.Model, path: Path, *, rollback: bool = True,
             checksummed: bool = False, like: keras.Model | None = None) -> list[Check]:
        """``like``: the model ``model`` is a twin of, whose variables have memory (what
        Keras writes is read off it, as in ``_map``)."""
        # (``checksummed`` changes nothing here: HDF5 holds no checksums to skip.)
        with open_h5(path) as f:
            checks = self._prepare(model, f, path)
            problem = self._structure_problem(like if like is not None else model, f)
            if problem:
                raise ArchitectureMismatchError(problem, path=path)
            legacy = _is_legacy(f)
            has_opt = "optimizer" in f and not legacy
        snapshot = None
        try:
            with keras_warnings() as caught:
                apply, snapshot = self._stage(model, path, legacy, rollback)
            skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
            if skipped:
                raise ArchitectureMismatchError(skipped[0], path=path)
            apply()  # everything was read and checked: now assign it all
        except BaseException:  # all or nothing: the model is put back as it was
            if snapshot is not None:
                snapshot.restore()
            # (a ValueError is Keras' word for a shape or a count that does not fit; h5py
            # reports damage as OSError, KeyError, RuntimeError...)
            with foreign_errors(path, "could not read the weights", at="assign"):
                raise
        checks.append(Check("model variables", True, f"{len(model.weights)} restored"
                            + (" (Keras 2 layout)" if legacy else "")))
        optimizer = optimizer_of(model)
        if has_opt and optimizer is not None:
            checks.append(Check("optimizer variables", True,
                                f"{len(optimizer.variables)} restored"))
        return checks

    # -- verification and inspection -----------------------------------------------

    def _map(self, twin: keras.Model, path: Path, *, mapped: bool = False,
             replay: Any = None, like: keras.Model | None = None) -> Recorded:
        """What loading would assign to ``twin``, recorded, not assigned (``mapped``:
        as views of kerasave's own temporary, which is not walked for safety).

        Raises:
            Unsupported: only Keras' reader can read the file (Keras 2's layout).
        """
        with open_h5(path, check=not mapped) as f:
            if _is_legacy(f):
                raise Unsupported("Keras 2's layout: Keras' own legacy loader reads it")
            self._prepare(twin, f, path)
            # (what Keras writes is read off ``like``, the model the twin copies: the
            # twin's variables have no memory yet, and a layer may store values
            # computed from them)
            problem = self._structure_problem(like if like is not None else twin, f)
        if problem:
            raise ArchitectureMismatchError(problem, path=path)
        with keras_warnings() as caught:
            recorded = savinglib.map_weights(twin, path, mapped=mapped, replay=replay)
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        if skipped:
            raise ArchitectureMismatchError(skipped[0], path=path)
        return recorded

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """Every model variable, and the optimizer's when the file holds them (a load
        restores both), compared bit for bit. ``own``: ``path`` is kerasave's own
        temporary, written by this process just now, and may be read as mapped pages."""
        unheld = _unheld(model)
        if unheld:
            return [Check("model variables", False,
                          f"the file cannot hold {len(unheld)} of the model's variables "
                          f"({', '.join(unheld[:3])}): Keras writes something else for "
                          "them (their layer's save_own_variables leaves them out, or "
                          "writes a value computed from them), so a load would not give "
                          "them back")]
        checks = self._check_model(model, path, own=own)
        if all(c.ok for c in checks):
            checks += self._check_stored(model, path, own=own)
        return checks

    def _check_stored(self, model: keras.Model, path: Path, *, own: bool) -> list[Check]:
        """What the model check does not cover, against what Keras writes for the model,
        by name: the optimizer's state (a ``LossScaleOptimizer``'s inner optimizer's
        too), and what layers store that is none of the model's weights (IDF weights,
        a custom layer's ``save_own_variables`` arrays)."""
        with open_h5(path, check=not own) as f:
            if _is_legacy(f):
                return []
            saved = _datasets(f)
            entries = stored_entries(model)
            weights = {id(v) for v in model.weights}
            wanted = {k for k, v in entries.items()
                      if k.startswith("optimizer/") or id(v) not in weights}
            held = {k for k in saved if k.startswith("optimizer/") or k not in entries
                    or id(entries[k]) not in weights}
            if "optimizer" not in f:  # (saved without it: nothing to compare)
                wanted = {k for k in wanted if not k.startswith("optimizer/")}
            checks = []
            missing, extra = sorted(wanted - held), sorted(held - wanted)
            if missing or extra:
                return [Check("stored values", False,
                              "; ".join(p for p in (
                                  f"the file lacks {', '.join(missing[:3])}" if missing else "",
                                  f"the model does not write {', '.join(extra[:3])}"
                                  if extra else "") if p))]
            with open(path, "rb") as raw:
                source = Source(raw.fileno(), 0, os.fstat(raw.fileno()).st_size, path,
                                mapped=own)
                for label, names in (("optimizer variables",
                                      sorted((k for k in wanted if k.startswith("optimizer/")),
                                             key=_position)),
                                     ("layer state", sorted(k for k in wanted
                                                            if not k.startswith("optimizer/")))):
                    if names:
                        pairs = [(getattr(entries[k], "path", k), _live(entries[k]),
                                  _values(source, saved[k])) for k in names]
                        checks.append(compare_arrays(label, pairs))
            return checks

    def _check_model(self, model: keras.Model, path: Path, *, own: bool) -> list[Check]:
        """The model's variables against the file's: recorded against a twin, copying
        nothing (fast path ``keras_reader``), or, its public twin, loaded into a
        fresh model by Keras' reader (``_loaded_check``)."""
        # A twin rebuilt from the config lacks what some layers keep beside it (an
        # adapted vocabulary): then the file's values are loaded into the model itself.
        rebuildable = not config_losses(model)

        def fast() -> list[Check]:
            if not rebuildable:
                raise Unsupported("the model keeps what its config does not rebuild")
            with model_twin(model, lambda twin, replay: self._map(
                    twin, path, mapped=own, replay=replay, like=model)) as (twin, recorded):
                return [Check("load", True, "into a fresh model of the same architecture"),
                        compare_arrays("model variables", pair_variables(
                            model.weights, twin.weights, recorded_reader(recorded)))]

        try:
            return attempt("keras_reader", fast,
                           lambda: self._loaded_check(model, path, rebuildable),
                           passthrough=(ArchitectureMismatchError, CorruptArtifactError),
                           ok=passed)
        except (ArchitectureMismatchError, CorruptArtifactError) as exc:
            return [Check("load", False, str(exc))]

    def _loaded_check(self, model: keras.Model, path: Path, rebuildable: bool) -> list[Check]:
        """The model's variables against what Keras' reader loads from the file."""
        # (no initializers run: the file fills it)
        twin, empty = empty_twin(model) if rebuildable else (None, [])
        if twin is not None:
            try:
                with keras_warnings():
                    self.load(twin, path, rollback=False, like=model)
                initialize_rest(empty)
            except (ArchitectureMismatchError, CorruptArtifactError) as exc:
                return [Check("load", False, str(exc))]
            return [Check("load", True, "into a fresh model of the same architecture"),
                    compare_arrays("model variables", pair_variables(model.weights,
                                                                     twin.weights))]
        # No config to build a twin from (subclassed model): load into the model itself
        # and put every value back afterwards.
        before = [(getattr(v, "path", v.name), to_numpy(v)) for v in model.weights]
        snapshot = Snapshot(model)
        try:
            with keras_warnings():
                self.load(model, path)
            loaded = [to_numpy(v) for v in model.weights]
        except (ArchitectureMismatchError, CorruptArtifactError) as exc:
            return [Check("load", False, str(exc))]
        finally:
            snapshot.restore()
        pairs = [(n, b, a) for (n, b), a in zip(before, loaded)]
        return [Check("load", True, "into the model itself (no config for a fresh copy); "
                      "values put back"),
                compare_arrays("model variables", pairs)]

    def contents(self, path: Path) -> Contents:
        with open_h5(path) as f:
            variables = h5_variables(f)
            has_opt = "optimizer" in f or "optimizer_weights" in f
            versions = {}
            if VERSIONS_ATTR in f.attrs:
                versions = json.loads(f.attrs[VERSIONS_ATTR])
            elif "keras_version" in f.attrs:
                versions = {"keras": str(f.attrs["keras_version"])}
            elif "model_weights" in f and "keras_version" in f["model_weights"].attrs:
                versions = {"keras": str(f["model_weights"].attrs["keras_version"])}
        return Contents(variables, has_opt, versions, optimizer_names(variables))

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        with open_h5(path) as f:
            yield from h5_arrays(f, path)

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        with open_h5(path) as f:
            yield h5_reading(f, path)


def _position(name: str) -> tuple[int, str]:
    """``vars/10`` after ``vars/9``: the optimizer's variables in the order it saved them."""
    last = name.rsplit("/", 1)[-1]
    return (int(last), name) if last.isdigit() else (-1, name)


def _unheld(model: keras.Model) -> list[str]:
    """The model's weights that Keras' weights file does not hold as they are (none
    of what it writes is the variable): a LoRA layer's factors (merged into its
    kernel, which is written merged), a custom layer's weights its
    ``save_own_variables`` leaves out."""
    written = {id(v) for v in stored_entries(model).values()}
    return [v.path for v in model.weights if id(v) not in written]


def _live(value: Any) -> np.ndarray:
    """A stored value as the file holds it: a variable's memory, or a layer's array."""
    if isinstance(value, keras.Variable):
        return view(value)
    return np.asarray(value) if isinstance(value, np.ndarray) else to_numpy(value)


def _values(source: Source, dataset: h5py.Dataset) -> np.ndarray:
    """A dataset's values: through ``source`` when it can (mapped or one pread), else
    h5py's copy."""
    fast = source.array(dataset)
    value = fast if fast is not None else np.asarray(dataset)
    if _dtype_name(dataset) == "bfloat16" and value.dtype == np.dtype("V2"):
        value = value.view(_bfloat16())  # the opaque bytes Keras stores, as it marks them
    return value
