"""LiteRT exports (``.tflite``, the former TFLite): Keras' ``model.export(format="litert")``,
verified in LiteRT's interpreter (``ai_edge_litert``).

``save_model(model, "m.tflite")`` writes the file with Keras' own exporter and
proves it in LiteRT's interpreter (see ``kerasave.formats._export``);
``load_model`` gives a ``Served`` object running it there. Keras before 3.13
has no LiteRT exporter: there kerasave does what Keras' exporter does, with
public names (Keras' SavedModel export, converted by TensorFlow's
``TFLiteConverter`` with the same settings). Reading what the file holds
(``inspect``, ``verify``'s arrays) needs neither LiteRT nor TensorFlow: the
flatbuffer is read by ``kerasave.formats._tflite``.

A model that needs TensorFlow's own kernels inside LiteRT ("Flex" ops, which
Keras' exporter allows) runs only where the Flex delegate is linked in, which
LiteRT's Python interpreter is not: kerasave cannot verify it, and refuses it
naming each such op and its layer.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasave._errors import UnknownFormatError, foreign_errors
from kerasave._report import Variable
from kerasave._runtime.lazy import keras, tf
from kerasave.formats import _tflite
from kerasave.formats._base import Contents, ReadArray
from kerasave.formats._export import (
    ExportFormat,
    Port,
    Served,
    captured_stderr,
    input_signature,
    mapped,
    refusal,
    wrap_export_error,
)

__all__ = ["LiteRTHandler"]

_UNREADABLE = "not a readable LiteRT model"

_XNNPACK = r"^INFO: Created TensorFlow Lite XNNPACK delegate"


def _read(path: Path) -> tuple[_tflite.Model, memoryview]:
    with foreign_errors(path, _UNREADABLE):
        data = mapped(path)
        return _tflite.read(data), data


def _converter_ops(text: str) -> list[tuple[str, str]]:
    """(op, node path) pairs a TFLite converter error names."""
    import re

    found = [(op, node) for op, node in re.findall(r'fused\["(\w+):", "([^"@]+)@', text)]
    for op in re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text):
        found.append((op, ""))
    for listed in re.findall(r"Custom ops: ([\w, ]+)", text):
        found += [(op.strip(), "") for op in listed.split(",") if op.strip()]
    ops = {op for op, node in found if node}
    return [(op, node) for op, node in found if node or op not in ops]


_EXPORTS_LITERT: list[bool] = []  # (decided once per process)


def _keras_exports_litert(model: keras.Model) -> bool:
    """Whether this Keras' ``model.export`` knows ``format="litert"`` (3.13 and later):
    asked with a name it refuses before it does anything, in an empty folder."""
    if not _EXPORTS_LITERT:
        with tempfile.TemporaryDirectory(prefix="kerasave-probe-") as folder:
            try:
                model.export(str(Path(folder) / "probe.not-tflite"), format="litert",
                             verbose=False)
                known = True
            except ValueError as exc:
                known = "unrecognized format" not in str(exc).lower()
            except Exception:
                known = True
        _EXPORTS_LITERT.append(known)
    return _EXPORTS_LITERT[0]


def _convert_like_keras(model: keras.Model, path: Path) -> None:
    """What Keras' LiteRT exporter does (3.13+), for a Keras without one: the model's
    SavedModel export converted by TensorFlow's TFLiteConverter, TensorFlow ops allowed
    and resource variables enabled, as Keras sets them."""
    folder = Path(tempfile.mkdtemp(prefix=".kerasave-litert-", dir=path.parent))
    try:
        model.export(str(folder / "saved"), format="tf_saved_model", verbose=False,
                     input_signature=input_signature(model))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved"))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        converter.experimental_enable_resource_variables = True
        path.write_bytes(converter.convert())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class LiteRTHandler(ExportFormat):
    name = "litert"
    exporter = "litert"
    suffixes = (".tflite",)
    temp_suffix = ".tflite"
    description = "LiteRT export"
    array_names = "LiteRT tensor names"
    runs_with = ("ai_edge_litert",)

    def sniff(self, path: Path) -> bool:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(8)
        return len(head) == 8 and head[4:] == _tflite.IDENTIFIER

    # -- writing -----------------------------------------------------------------------
    def _export(self, model: keras.Model, path: Path) -> None:
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # (TensorFlow's INFO lines about the SavedModel step)
        try:
            with captured_stderr() as said:
                try:
                    if _keras_exports_litert(model):
                        model.export(str(path), format="litert", verbose=False,
                                     input_signature=input_signature(model))
                    else:
                        _convert_like_keras(model, path)
                except Exception as exc:
                    ops = _converter_ops(str(exc) + "".join(said))
                    raise wrap_export_error(self, model, exc, ops) from exc
        finally:
            logger.setLevel(level)

    def _refuse_unsupported(self, model: keras.Model, path: Path) -> None:
        found, _ = _read(path)
        ops = _custom_ops(found)
        if ops:
            raise refusal(self, model, "LiteRT's runtime has no kernel for", ops,
                          "TensorFlow ops run only where LiteRT's Flex delegate is linked "
                          "in, as in no Python LiteRT kerasave could verify the export with")

    def failing_ops(self, path: Path, error: str) -> list[tuple[str, str]]:
        """LiteRT names a failing operator by its position: "Node number 2 (SUB)"."""
        import re

        found, _ = _read(path)
        ops = []
        for number, op in re.findall(r"Node number (\d+) \((\w+)\)", error):
            index = int(number)
            outputs = found.ops[index][1] if index < len(found.ops) else ()
            ops.append((op, next((found.tensors[i].name for i in outputs if i >= 0), "")))
        return ops

    # -- reading -----------------------------------------------------------------------
    def safety(self, path: Path) -> None:
        found, data = _read(path)
        with foreign_errors(path, _UNREADABLE):
            _tflite.ports(found)
            for tensor in _tflite.constants(found):
                _check_size(found, tensor, data)

    def _open(self, path: Path) -> Served:
        from ai_edge_litert import interpreter as litert

        found, _ = _read(path)
        ops = _custom_ops(found)
        if ops:
            raise UnknownFormatError(
                "LiteRT's Python interpreter cannot run this model: it needs the ops "
                + ", ".join(sorted({op for op, _ in ops})), path=path)
        inputs, outputs, index = _tflite.ports(found)
        with foreign_errors(path, "LiteRT's interpreter cannot load it", at="run"):
            with captured_stderr(drop=_XNNPACK):
                runner = litert.Interpreter(model_path=str(path))

        def run(arrays: list[np.ndarray]) -> list[Any]:
            for port, array in zip(inputs, arrays):
                runner.resize_tensor_input(index[port.name], list(array.shape), strict=True)
            with captured_stderr(drop=_XNNPACK):
                runner.allocate_tensors()
                for port, array in zip(inputs, arrays):
                    runner.set_tensor(index[port.name], array)
                runner.invoke()
            return [runner.get_tensor(index[port.name]).copy() for port in outputs]

        return Served(path, self.name, f"LiteRT {_litert_version()}", inputs, outputs, run)

    def inspect_ports(self, path: Path) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
        found, _ = _read(path)
        with foreign_errors(path, _UNREADABLE):
            inputs, outputs, _ = _tflite.ports(found)
        return inputs, outputs

    def contents(self, path: Path) -> Contents:
        found, _ = _read(path)
        variables = tuple(Variable(t.name, tuple(t.shape), t.dtype)
                          for t in _tflite.constants(found))
        versions = {}
        converter = _tflite.conversion_tensorflow(found)
        if converter:
            versions["tensorflow"] = converter
        runtime = _tflite.metadata_text(found, "min_runtime_version")
        if runtime:
            versions["litert runtime (least)"] = runtime
        versions["litert schema"] = str(found.version)
        return Contents(variables, False, versions)

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        found, data = _read(path)
        for tensor in _tflite.constants(found):
            with foreign_errors(path, _UNREADABLE):
                array = _tflite.buffer_array(found, tensor, data)
            if array is not None:
                yield tensor.name, array

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        found, data = _read(path)
        tensors = {t.name: t for t in _tflite.constants(found)}

        def read(name: str) -> np.ndarray:
            tensor = tensors[name]
            with foreign_errors(path, _UNREADABLE):
                array = _tflite.buffer_array(found, tensor, data)
            if array is None:
                raise UnknownFormatError(
                    f"the tensor {name!r} holds {tensor.dtype} values, which kerasave does "
                    "not read as an array", path=path)
            return array

        yield read


def _check_size(found: _tflite.Model, tensor: _tflite.Tensor, data: memoryview) -> None:
    """A constant's declared shape and dtype against its buffer's size (no copy)."""
    buffer = found.buffers[tensor.buffer]
    size = buffer.size if buffer.offset > 1 else len(buffer.data)
    if buffer.offset > 1 and buffer.offset + buffer.size > len(data):
        raise _tflite.FlatbufferError(f"tensor {tensor.name!r}: its data lies past the end")
    itemsize = _tflite._SIZES.get(tensor.dtype)
    if itemsize is None:
        return
    if any(d < 0 for d in tensor.shape):
        raise _tflite.FlatbufferError(f"tensor {tensor.name!r} has a negative dimension")
    count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
    if count * itemsize != size:
        raise _tflite.FlatbufferError(f"tensor {tensor.name!r} declares {count * itemsize} "
                                      f"bytes {list(tensor.shape)}, its buffer holds {size}")


def _custom_ops(found: _tflite.Model) -> list[tuple[str, str]]:
    """(op, the tensor it writes) for every custom operator (Flex: a TensorFlow op)."""
    ops = []
    for op, outputs in found.ops:
        if op in found.custom:
            name = op[len("Flex"):] if op.startswith("Flex") else op
            where = next((found.tensors[i].name for i in outputs if i >= 0), "")
            ops.append((name, where))
    return ops


def _litert_version() -> str:
    from importlib import metadata

    for dist in ("ai-edge-litert", "ai-edge-litert-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
