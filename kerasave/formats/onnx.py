"""ONNX exports (``.onnx``): Keras' ``model.export(format="onnx")`` (through tf2onnx),
verified in onnxruntime.

``save_model(model, "m.onnx")`` writes the file with Keras' own exporter and
proves it in onnxruntime (see ``kerasave.formats._export``); ``load_model``
gives a ``Served`` object running it there. Reading what the file holds
(``inspect``, ``verify``'s arrays) needs neither ONNX nor TensorFlow: the
protobuf is decoded by ``kerasave.formats._onnxproto``.

A tensor may keep its bytes in another file ("external data"); onnxruntime
reads the location the model names. Every load checks, before onnxruntime sees
the file, that each such location is a file inside the model's own folder:
a location that is absolute, climbs out with ``..`` or through a link is
refused with ``UnsafeArtifactError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasave._errors import (
    CorruptArtifactError,
    UnknownFormatError,
    UnsafeArtifactError,
    foreign_errors,
)
from kerasave._report import Variable
from kerasave._runtime.lazy import keras
from kerasave.formats import _onnxproto as proto
from kerasave.formats._base import Contents, ReadArray
from kerasave.formats._export import (
    ExportFormat,
    Port,
    Served,
    input_signature,
    logged,
    mapped,
    refusal,
    wrap_export_error,
)

__all__ = ["OnnxHandler"]

_UNREADABLE = "not a readable ONNX model"

# The op domains onnxruntime's CPU build implements.
_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


def _read(path: Path) -> tuple[proto.ModelProto, memoryview]:
    with foreign_errors(path, _UNREADABLE):
        view = mapped(path)
        return proto.model(view), view


class OnnxHandler(ExportFormat):
    name = "onnx"
    exporter = "onnx"
    suffixes = (".onnx",)
    temp_suffix = ".onnx"
    description = "ONNX export"
    array_names = "ONNX initializer names"
    writes_with = ("tf2onnx", "onnx")
    runs_with = ("onnxruntime",)

    def sniff(self, path: Path) -> bool:
        """An ONNX ModelProto: its first field is ``ir_version`` (a varint, key 0x08)
        and it holds a graph, as every ONNX writer puts them."""
        if not path.is_file() or path.stat().st_size < 4:
            return False
        with open(path, "rb") as f:
            if f.read(1) != b"\x08":
                return False
        try:
            found = proto.model(mapped(path))
        except (proto.WireError, ValueError, OSError):
            return False
        return found.ir_version > 0 and bool(found.graph.node or found.graph.output)

    # -- writing -----------------------------------------------------------------------
    def _export(self, model: keras.Model, path: Path) -> None:
        with logged("tf2onnx") as records:
            try:
                model.export(str(path), format="onnx", verbose=False,
                             input_signature=input_signature(model))
            except Exception as exc:
                raise wrap_export_error(self, model, exc, _unsupported(records)) \
                    from exc
        ops = _unsupported(records)
        if ops:
            raise refusal(self, model, "tf2onnx cannot convert", ops)

    def _refuse_unsupported(self, model: keras.Model, path: Path) -> None:
        found, _ = _read(path)
        foreign = sorted({(n.op_type, n.name) for g, _ in proto.graphs(found)
                          for n in g.node if n.domain not in _DOMAINS})
        if foreign:
            raise refusal(self, model, "onnxruntime has no kernel for", [
                (f"{op}", name) for op, name in foreign])

    def failing_ops(self, path: Path, error: str) -> list[tuple[str, str]]:
        """onnxruntime names a failing node: "running Add node. Name:'model/layer/add'"."""
        import re

        return re.findall(r"running (\w+) node\. Name:'([^']*)'", error)

    # -- reading -----------------------------------------------------------------------
    def safety(self, path: Path) -> None:
        found, _ = _read(path)
        with foreign_errors(path, _UNREADABLE):
            for where, tensor in proto.tensors(found):
                try:
                    proto.external_data(tensor, path.parent)
                except ValueError as exc:
                    raise UnsafeArtifactError(f"the {where} keeps its data outside the model: "
                                              f"{exc}", path=path) from exc

    def _open(self, path: Path) -> Served:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: they are raised, not printed
        try:
            session = ort.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:
            text = " ".join(str(exc).split())
            if "NOT_IMPLEMENTED" in text or "No Op registered" in text:
                raise UnknownFormatError(f"onnxruntime {ort.__version__} cannot run this "
                                         f"model: {text}", path=path) from exc
            raise CorruptArtifactError(f"onnxruntime {ort.__version__} cannot load it: {text}",
                                       path=path) from exc
        inputs = tuple(_port(i) for i in session.get_inputs())
        outputs = tuple(_port(o) for o in session.get_outputs())
        names = [o.name for o in outputs]

        def run(arrays: list[np.ndarray]) -> list[Any]:
            return session.run(names, {p.name: a for p, a in zip(inputs, arrays)})

        return Served(path, self.name, f"onnxruntime {ort.__version__}", inputs, outputs, run)

    def inspect_ports(self, path: Path) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
        found, _ = _read(path)
        initialized = {t.name for t in found.graph.initializer}
        return (proto.ports(found.graph.input, initialized),
                proto.ports(found.graph.output, set()))

    def contents(self, path: Path) -> Contents:
        found, _ = _read(path)
        variables = []
        for t in found.graph.initializer:
            variables.append(Variable(t.name, tuple(int(d) for d in t.dims),
                                      proto.dtype_name(t.data_type)))
        versions = {}
        if found.producer_name:  # (tf2onnx adds its git hash, "None" in a release)
            version = found.producer_version.removesuffix(" None").strip()
            versions[found.producer_name] = version or "unknown"
        opsets = {o.domain or "ai.onnx": o.version for o in found.opset_import}
        if "ai.onnx" in opsets:
            versions["onnx opset"] = str(opsets["ai.onnx"])
        return Contents(tuple(variables), False, versions)

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        found, _ = _read(path)
        self.safety(path)
        for t in found.graph.initializer:
            with foreign_errors(path, _UNREADABLE):
                array = proto.tensor_array(t, path.parent)
            yield t.name, array

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        found, _ = _read(path)  # (the top graph: what inspect lists)
        initializers = {t.name: t for t in found.graph.initializer}
        walked: list[bool] = []

        def read(name: str) -> np.ndarray:
            tensor = initializers[name]
            if not walked:  # every tensor's data checked to lie inside, before any read
                self.safety(path)
                walked.append(True)
            with foreign_errors(path, _UNREADABLE):
                return proto.tensor_array(tensor, path.parent)

        yield read


def _port(arg: Any) -> Port:
    """An onnxruntime NodeArg as a port: ``tensor(float)`` -> float32, symbolic dims None."""
    kind = str(arg.type)
    inner = kind[len("tensor("):-1] if kind.startswith("tensor(") else kind
    dtype = {"float": "float32", "double": "float64", "float16": "float16",
             "bfloat16": "bfloat16"}.get(inner, inner)
    shape = None if arg.shape is None else tuple(
        d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return Port(arg.name, dtype, shape)


def _unsupported(records: list[Any]) -> list[tuple[str, str]]:
    """(op, node) pairs from tf2onnx's "Tensorflow op [node: Op] is not supported" lines."""
    found = []
    for record in records:
        args = record.args if isinstance(record.args, tuple) else ()
        if "is not supported" in str(record.msg) and len(args) == 2:
            found.append((str(args[1]), str(args[0])))
    return found
