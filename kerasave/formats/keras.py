"""The ``.keras`` format: Keras 3's zip of config, weights (an HDF5 member) and
optimizer state. Loading returns a compiled model whose optimizer state equals
the saved one, so training continues exactly."""

from __future__ import annotations

import contextlib
import json
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._errors import (
    KerasaveError,
    foreign_errors,
)
from kerasave._fastpaths import attempt, savinglib, zipwriter
from kerasave._fastpaths.h5read import WEIGHTS, Window, member_span
from kerasave._report import Check
from kerasave._runtime.lazy import keras
from kerasave._safety import (
    check_h5,
    check_nesting,
    check_zip,
    model_budget,
    refuse_code,
    refuse_oversized,
)
from kerasave.compare.state import keras_twin, keras_warnings
from kerasave.formats._base import (
    Contents,
    ReadArray,
    no_arrays,
    passed,
)
from kerasave.formats._whole import (
    LOAD,
    WholeModelFormat,
    loaded_check,
    map_load_error,
    twin_check,
)
from kerasave.formats.h5weights import (
    h5_arrays,
    h5_reading,
    h5_variables,
    optimizer_names,
)

__all__ = ["KerasHandler"]

_UNREADABLE = "not a readable .keras archive"


@contextlib.contextmanager
def _weights_h5(path: Path, zf: zipfile.ZipFile) -> Iterator[h5py.File]:
    """The archive's weights as an open h5py file, read in place when stored uncompressed."""
    if zf.getinfo(WEIGHTS).compress_type != zipfile.ZIP_STORED:
        with zf.open(WEIGHTS) as inner, h5py.File(inner, "r") as f:
            yield f
        return
    start, size = member_span(path, zf, WEIGHTS)
    with open(path, "rb") as raw, h5py.File(Window(raw.fileno(), start, size), "r") as f:
        yield f


def _public_load(path: Path, config: dict[str, Any], *, compile: bool, safe_mode: bool,
                 custom_objects: Any) -> keras.Model:
    """``keras.saving.load_model``, which initializes every variable the config
    declares before it reads a value: so the declared bytes are counted first
    (kerasave's own reader creates them without memory and compares shapes first)."""
    with zipfile.ZipFile(path) as zf:
        backed = sum(info.file_size for info in zf.infolist())
    bare = {k: v for k, v in config.items() if k != "compile_config"}
    refuse_oversized(lambda dry: keras.saving.deserialize_keras_object(
        dry, custom_objects=dict(custom_objects or {}), safe_mode=safe_mode),
        bare, model_budget(backed), path)
    return keras.saving.load_model(str(path), custom_objects=custom_objects, compile=compile,
                                   safe_mode=safe_mode)


class KerasHandler(WholeModelFormat):
    name = "keras"
    suffixes = (".keras",)
    temp_suffix = ".keras"
    array_names = "Keras' weights-file layout"

    def sniff(self, path: Path) -> bool:
        return path.is_file() and zipfile.is_zipfile(path)

    def write(self, model: keras.Model, path: Path) -> None:
        def public() -> None:
            path.unlink(missing_ok=True)
            model.save(str(path))

        attempt("keras_writer", lambda: zipwriter.save_keras(model, path), public,
                passthrough=(KerasaveError,))

    def _config(self, path: Path, *, own: bool = False) -> dict[str, Any]:
        """The archive's config, after checking the archive is safe to hand to Keras
        (``own``: kerasave's own temporary, whose HDF5 file is not walked for safety)."""
        with foreign_errors(path, _UNREADABLE):
            with zipfile.ZipFile(path) as zf:
                check_zip(zf, path)
                if "model.weights.h5" in zf.namelist() and not own:
                    with _weights_h5(path, zf) as f:
                        check_h5(f, path)
                return json.loads(zf.read("config.json"))

    def load(self, path: Path, *, compile: bool = True, safe_mode: bool = True,
             custom_objects: Any = None, checksummed: bool = False,
             mmap: bool = False) -> keras.Model:
        config = self._config(path)
        check_nesting(config, path)
        if safe_mode:
            refuse_code(config, str(path), compiled=compile)
        with foreign_errors(path, LOAD, at="load"):
            with keras_warnings() as caught:
                model = attempt(
                    "keras_reader",
                    lambda: savinglib.load_keras(
                        path, config, compile=compile, safe_mode=safe_mode,
                        custom_objects=custom_objects, checksummed=checksummed, mmap=mmap),
                    lambda: _public_load(path, config, compile=compile, safe_mode=safe_mode,
                                         custom_objects=custom_objects),
                    passthrough=(KerasaveError,))
        for w in caught:
            text = str(w.message)
            # An optimizer saved before it was built holds only its step counter and
            # learning rate: Keras builds fresh slots, which is the same state.
            if "Skipping variable loading for optimizer" in text and re.search(
                    r"saved optimizer has [0-2] variables", text):
                continue
            warnings.warn(f"{path}: {text}", UserWarning, stacklevel=2)
        return model

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """``own``: ``path`` is kerasave's own temporary, written by this process just
        now, and may be read as mapped pages.

        A twin built from the archive holds its values as recorded views (fast path
        ``keras_reader``); its public twin is a real load (``loaded_check``).
        """
        try:
            config = self._config(path, own=own)
            refuse_code(config, str(path))
        except KerasaveError as exc:
            return [Check("load", False, str(map_load_error(exc, path)))]

        def fast() -> list[Check]:
            with contextlib.ExitStack() as lent:  # the twin goes back once the checks ran
                with keras_warnings():
                    loaded, recorded = lent.enter_context(keras_twin(path, config, mapped=own))
                return twin_check(model, loaded, recorded)

        try:
            return attempt("keras_reader", fast, lambda: loaded_check(model, path, self.load),
                           passthrough=(KerasaveError,), ok=passed)
        except KerasaveError as exc:
            return [Check("load", False, str(map_load_error(exc, path)))]

    def contents(self, path: Path) -> Contents:
        with foreign_errors(path, _UNREADABLE):
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("metadata.json"))
                with _weights_h5(path, zf) as f:
                    variables = h5_variables(f)
                    has_opt = "optimizer" in f
        versions = {"keras": str(meta.get("keras_version", "?"))}
        return Contents(variables, has_opt, versions, optimizer_names(variables))

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        with foreign_errors(path, _UNREADABLE):
            zf = zipfile.ZipFile(path)
        with zf:
            check_zip(zf, path)
            if "model.weights.h5" not in zf.namelist():
                return  # (a model without variables)
            with _weights_h5(path, zf) as f:  # read in place, not copied out
                check_h5(f, path)
                yield from h5_arrays(f, path)

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        with foreign_errors(path, _UNREADABLE):
            zf = zipfile.ZipFile(path)
        with zf:
            check_zip(zf, path)
            if "model.weights.h5" not in zf.namelist():
                with no_arrays() as read:  # (a model without variables)
                    yield read
                return
            with _weights_h5(path, zf) as f:  # read in place, not copied out
                check_h5(f, path)
                yield h5_reading(f, path)
