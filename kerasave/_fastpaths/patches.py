"""Keras, patched for one thread while a block runs: what loads and checks need.

- ``uninitialized``/``build_deferred``: variables built to be loaded into get a
  TensorFlow handle but no memory, and run no initializer until assigned
  (``initialize_rest`` runs the initializers of what nothing was loaded into).
- ``recorded``: ``variable.assign`` records the value instead of assigning it
  (verification compares the file's pages where they lie).
- ``legacy_reads``/``legacy_writes``: Keras' legacy HDF5 loader and writer read
  datasets from a ``Source`` and write views of the variables, instead of copies.
- ``optimizer_variables``: an optimizer's ``save_own_variables`` hands kerasave's
  own weights stores its variables, not a NumPy copy of each.

Every patch is applied under one lock (``_patched``) and affects only the
thread that applied it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import h5py
import numpy as np

from kerasave._errors import KerasaveError
from kerasave._fastpaths import Unsupported, attempt, patching, require
from kerasave._fastpaths.dlpack import variable_view
from kerasave._fastpaths.h5read import Source
from kerasave._runtime.lazy import keras

__all__ = ["Recorded", "build_deferred", "initialize_rest", "legacy_reads", "legacy_writes",
           "optimizer_variables", "recorded", "uninitialized"]

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
    require("recorded_assign")
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
    once the values are loaded. (Through ``build_deferred``, which falls back to
    Keras' own initialization.)
    """
    created: list[Any] = []
    from tensorflow.python.ops.resource_variable_ops import UninitializedVariable

    # The TensorFlow backend's Variable, wherever this Keras keeps its module (3.12-3.15:
    # keras.src.backend.tensorflow.core; 3.16: ...tensorflow.ops.core): the class in
    # keras.Variable's bases that defines the method.
    Variable = next((c for c in keras.Variable.__mro__
                     if "_initialize_with_initializer" in vars(c)), None)
    if Variable is None:
        raise Unsupported("no Variable class of this Keras defines _initialize_with_initializer")

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
            # (kept beside Keras' own: a twin lent again re-initializes what no
            # file filled, after ``initialize_rest`` cleared ``_initializer``)
            variable._kerasave_initializer = initializer
            created.append(variable)

        return defer

    with _patched(Variable, "_initialize_with_initializer", patch):
        yield created


_PATCH_LOCK = threading.RLock()


def build_deferred(build: Callable[[], Any]) -> tuple[Any, list[Any]]:
    """``build()`` inside ``uninitialized``, and the variables it deferred (fast path
    ``deferred_init``); its public twin builds as Keras does, initializers and all
    (and defers nothing).

    A model whose building reads its own variables (an adapted
    ``Normalization`` finalizes its state from them) cannot be built that way:
    it is not one this fast path takes, and it is built again as usual.
    """

    def fast() -> tuple[Any, list[Any]]:
        try:
            with uninitialized() as created:
                return build(), created
        except (KerasaveError, Unsupported):
            raise
        except Exception as exc:
            raise Unsupported(f"the build needs its variables' values: {exc}") from exc

    return attempt("deferred_init", fast, lambda: (build(), []),
                   passthrough=(KerasaveError,))


def initialize_rest(created: list[Any]) -> None:
    """What nothing was loaded into starts as Keras would start it: its initializer."""
    for variable in created:
        if not variable._value.is_initialized():
            initializer = variable._initializer or getattr(variable, "_kerasave_initializer",
                                                           None)
            variable._value.assign(initializer(variable._shape, dtype=variable._dtype))  # type: ignore[misc]  # (Keras sets one)
        variable._initializer = None


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
    if not hasattr(legacy_h5_format, target) or names is None:
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


@contextlib.contextmanager
def legacy_writes() -> Iterator[None]:
    """Keras' legacy HDF5 writer, in this thread, writes views of the variables.

    It copies every value to NumPy first (all of the optimizer's at once); h5py
    writes from a view just as well.
    """
    from keras.src.legacy.saving import legacy_h5_format

    if not hasattr(getattr(legacy_h5_format, "backend", None), "convert_to_numpy"):
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


@contextlib.contextmanager
def optimizer_variables(stores: tuple[type, ...]) -> Iterator[None]:
    """An optimizer's ``save_own_variables`` gives a store of one of ``stores``
    (kerasave's own, which write or record variables as they are) each variable
    itself, where Keras' gives ``variable.numpy()``: a copy of all of the
    optimizer's state (two thirds of an Adam-trained model's bytes) made before
    the store sees it. Same names, same order, same bytes; any other store, in
    any thread, gets Keras' own method.
    """
    from keras.src.optimizers import base_optimizer

    base = getattr(base_optimizer, "BaseOptimizer", None)
    if base is None or not callable(getattr(base, "save_own_variables", None)):
        yield  # another Keras: its own copies, slower
        return

    def patch(original: Any) -> Any:
        def save_own_variables(optimizer: Any, store: Any) -> None:
            if not isinstance(store, stores):
                return original(optimizer, store)
            for i, variable in enumerate(optimizer.variables):
                store[str(i)] = variable  # type: ignore[index]  # (a store of Keras' own)
            return None

        return save_own_variables

    with _patched(base, "save_own_variables", patch):
        yield
