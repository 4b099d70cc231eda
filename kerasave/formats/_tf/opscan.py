"""A SavedModel is a program: what it may do is read from ``saved_model.pb`` before
TensorFlow loads anything.

``tf.saved_model.load`` imports every function of the graph's function library and
runs some of them at once (resource initializers: a lookup table's, a restore
function's); calling the restored object runs the rest. Any TensorFlow op may be
in them: ``WriteFile``, ``ReadFile``, ``MatchingFiles``, ``PyFunc``, a
``PrintV2`` to a file, a dataset that reads TFRecords... ``scan`` decodes the
graph and every function of its library (kerasave's protobuf decoder, no
TensorFlow) and refuses, with ``UnsafeArtifactError`` naming the op, its node and
its function:

- an op outside the allowlist (``opnames.ALLOWED``: the op libraries that only
  compute on tensors and on the process' own resources), called as a node or
  named as a function by a ``func`` attribute (``PartitionedCall(f=WriteFile)``);
- a checkpoint's own I/O (``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``...)
  anywhere but in the functions the ``saver_def`` names (TensorFlow 1's loaders
  feed them the directory's own variables path), or in one of those that any other
  function or the object graph can also reach;
- ``PrintV2`` to anything but the standard streams or the log;
- an asset whose file name leaves ``assets/``, or any file of the directory that
  is a symbolic link to a place outside it.

What cannot be judged without running it (a ``While`` loop that never ends, a
``Fill`` of a shape computed at run time) is not promised: see
``docs/security.md``. Budgets that can be judged are checked always, whatever
``safe_mode``: a ``Const`` may not declare far more bytes than it stores, and no
attribute may nest deeper than ``_MAX_DEPTH``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kerasave._errors import CorruptArtifactError, UnsafeArtifactError, foreign_errors
from kerasave.formats._tf.opnames import ALLOWED
from kerasave.formats._tf.protowire import WireError, _fields, _int64, _string, _view

__all__ = ["scan", "Program"]

# What the saver functions (saver_def) may do beyond the allowlist: read and write
# the checkpoint they are given.
_CHECKPOINT_IO = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                            "Save", "SaveSlices", "Restore", "RestoreSlice",
                            "ShardedFilespec"})
_WHY = {  # the reasons shown for well-known ops (others: not on the allowlist)
    **dict.fromkeys(("ReadFile", "MatchingFiles", "WholeFileReader", "WholeFileReaderV2",
                     "TextLineReader", "TextLineReaderV2", "TFRecordReader",
                     "TFRecordReaderV2", "FixedLengthRecordReader", "LMDBReader",
                     "ImmutableConst", "InitializeTableFromTextFile",
                     "InitializeTableFromTextFileV2", "TFRecordDataset", "TextLineDataset",
                     "FixedLengthRecordDataset", "RecordInput", "DecodeProtoV2",
                     "EncodeProto", "LoadAndRemapMatrix", "GenerateVocabRemapping"),
                    "it reads files named by the artifact"),
    **dict.fromkeys(("WriteFile", "CreateSummaryFileWriter", "WriteSummary", "SaveDataset",
                     "DebugIdentityV2", "DebugIdentityV3", "DebugNumericSummaryV2"),
                    "it writes files"),
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), "it calls Python code"),
    **dict.fromkeys(_CHECKPOINT_IO, "it reads or writes checkpoint files"),
    "Abort": "it ends the process",
    "RemoteCall": "it runs a function on another device or task",
    "DatasetFromGraph": "it runs a graph held in a string",
}
_STREAMS = frozenset({"stdout", "stderr", "log(info)", "log(warning)", "log(error)"})
_MAX_DEPTH = 16  # func attributes inside func attributes (Keras' exports: 1)
_CONST_FLOOR = 16 * 2**20  # a Const may declare this much whatever it stores
_CONST_EXPANSION = 1100  # ... and beyond it at most this many times what it stores
_ITEMSIZE = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 7: 32, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1,
             13: 4, 14: 2, 15: 2, 16: 2, 17: 2, 18: 16, 19: 2, 20: 16, 21: 64, 22: 4,
             23: 8}  # DataType → bytes of one element in memory (strings: tstring's 32)


@dataclass
class _Node:
    name: str
    op: str
    calls: list[str] = field(default_factory=list)  # functions named by func attributes
    stream: str | None = None  # PrintV2's output_stream
    const: tuple[int, tuple[int, ...], int] | None = None  # (dtype, dims, stored bytes)


@dataclass
class Program:
    """What ``saved_model.pb`` holds that the scan judges."""

    graph: list[_Node] = field(default_factory=list)
    functions: dict[str, list[_Node]] = field(default_factory=dict)
    gradients: list[str] = field(default_factory=list)
    saver_nodes: set[str] = field(default_factory=set)
    object_functions: set[str] = field(default_factory=set)
    assets: list[str] = field(default_factory=list)


def _name_attr_list(buf: memoryview, depth: int, into: _Node) -> None:
    """A NameAttrList (a function and its attributes): the name is a call."""
    for number, wire, raw in _fields(buf):
        if number == 1 and wire == 2:
            into.calls.append(_string(raw))
        elif number == 2 and wire == 2:  # map<string, AttrValue> entry
            for n, w, value in _fields(raw):
                if n == 2 and w == 2:
                    _attr_value(value, depth + 1, into, "")


def _attr_value(buf: memoryview, depth: int, into: _Node, key: str) -> None:
    if depth > _MAX_DEPTH:
        raise WireError(f"function attributes nested deeper than {_MAX_DEPTH}")
    for number, wire, raw in _fields(buf):
        if wire != 2:
            continue
        if number == 10:  # func
            _name_attr_list(raw, depth, into)
        elif number == 1:  # list: its func and tensor entries
            for n, w, item in _fields(raw):
                if n == 9 and w == 2:
                    _name_attr_list(item, depth, into)
        elif number == 2 and key == "output_stream":
            into.stream = _string(raw)
        elif number == 8 and key == "value" and into.op == "Const":
            into.const = _tensor_header(raw)


def _tensor_header(buf: memoryview) -> tuple[int, tuple[int, ...], int]:
    """A TensorProto's dtype, dims and how many bytes it stores (content or values)."""
    dims: tuple[int, ...]
    dtype, dims, stored = 0, (), 0
    for number, wire, raw in _fields(buf):
        if number == 1 and wire == 0:
            dtype = raw
        elif number == 2 and wire == 2:
            found = []
            for n, w, dim in _fields(raw):
                if n == 2 and w == 2:
                    size = 0
                    for dn, dw, dv in _fields(dim):
                        if dn == 1 and dw == 0:
                            size = _int64(dv)
                    found.append(size)
            dims = tuple(found)
        elif number >= 4:
            stored += len(raw) if wire == 2 else 8
    return dtype, dims, stored


def _node_def(buf: memoryview) -> _Node:
    node = _Node("", "")
    attrs = []
    for number, wire, raw in _fields(buf):
        if wire != 2:
            continue
        if number == 1:
            node.name = _string(raw)
        elif number == 2:
            node.op = _string(raw)
        elif number == 5:
            attrs.append(raw)
    for entry in attrs:  # (after the op is known)
        key, value = "", None
        for n, w, raw in _fields(entry):
            if n == 1 and w == 2:
                key = _string(raw)
            elif n == 2 and w == 2:
                value = raw
        if value is not None:
            _attr_value(value, 0, node, key)
    return node


def _function_def(buf: memoryview) -> tuple[str, list[_Node]]:
    name, nodes, extra = "", [], _Node("", "")
    for number, wire, raw in _fields(buf):
        if wire != 2:
            continue
        if number == 1:  # signature: OpDef, its name
            for n, w, value in _fields(raw):
                if n == 1 and w == 2:
                    name = _string(value)
        elif number == 3:
            nodes.append(_node_def(raw))
        elif number == 5:  # the function's own attributes
            for n, w, value in _fields(raw):
                if n == 2 and w == 2:
                    _attr_value(value, 0, extra, "")
    if extra.calls:
        nodes.append(_Node("(the function's attributes)", "", extra.calls))
    return name, nodes


def _graph_def(buf: memoryview, program: Program) -> None:
    for number, wire, raw in _fields(buf):
        if number == 1 and wire == 2:
            program.graph.append(_node_def(raw))
        elif number == 2 and wire == 2:  # FunctionDefLibrary
            for n, w, value in _fields(raw):
                if n == 1 and w == 2:
                    name, nodes = _function_def(value)
                    # (another meta graph's function of the same name: both are judged)
                    program.functions.setdefault(name, []).extend(nodes)
                elif n == 2 and w == 2:  # GradientDef: the gradient function's name
                    for gn, gw, gv in _fields(value):
                        if gn == 2 and gw == 2:
                            program.gradients.append(_string(gv))


def _object_graph(buf: memoryview, program: Program) -> None:
    for number, wire, raw in _fields(buf):
        if number == 2 and wire == 2:  # concrete_functions map entry: its key
            for n, w, value in _fields(raw):
                if n == 1 and w == 2:
                    program.object_functions.add(_string(value))
        elif number == 1 and wire == 2:  # SavedObject
            for n, w, value in _fields(raw):
                if w != 2:
                    continue
                if n == 6:  # SavedFunction.concrete_functions
                    for fn, fw, fv in _fields(value):
                        if fn == 1 and fw == 2:
                            program.object_functions.add(_string(fv))
                elif n == 8:  # SavedBareConcreteFunction.concrete_function_name
                    for fn, fw, fv in _fields(value):
                        if fn == 1 and fw == 2:
                            program.object_functions.add(_string(fv))


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":", 1)[0]


def read_program(data: bytes | memoryview) -> Program:
    """The graphs, functions, saver, object-graph functions and assets of a
    ``saved_model.pb`` (every meta graph's). Raises ``WireError`` when malformed."""
    program = Program()
    for number, wire, meta in _fields(_view(data)):
        if number != 2 or wire != 2:
            continue
        for n, w, raw in _fields(meta):
            if w != 2:
                continue
            if n == 2:
                _graph_def(raw, program)
            elif n == 3:  # SaverDef: save_tensor_name (2), restore_op_name (3)
                for sn, sw, sv in _fields(raw):
                    if sn in (2, 3) and sw == 2:
                        program.saver_nodes.add(_node_name(_string(sv)))
            elif n == 6:  # AssetFileDef.filename
                for an, aw, av in _fields(raw):
                    if an == 2 and aw == 2:
                        program.assets.append(_string(av))
            elif n == 7:
                _object_graph(raw, program)
    return program


def _reach(program: Program, roots: set[str]) -> set[str]:
    """The library functions ``roots`` can run, themselves included (no recursion)."""
    seen: set[str] = set()
    todo = [r for r in roots if r in program.functions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in program.functions[name]:
            for callee in (node.op, *node.calls):
                if callee in program.functions and callee not in seen:
                    todo.append(callee)
    return seen


def _calls(node: _Node) -> set[str]:
    return {node.op, *node.calls}


def _refuse(node: _Node, where: str, what: str, why: str, path: Path) -> UnsafeArtifactError:
    return UnsafeArtifactError(
        f"the SavedModel's {where} holds {what} (node {node.name!r}): {why}; loading it "
        "would let the file act outside its own tensors. Pass safe_mode=False only if you "
        "trust the file", path=path)


def _judge_ops(program: Program, path: Path) -> None:
    saver_roots = set().union(*(_calls(n) for n in program.graph
                                if n.name in program.saver_nodes)) if program.graph else set()
    saver = _reach(program, saver_roots)
    other_roots = {name for name in program.functions if name not in saver}
    other_roots |= program.object_functions | set(program.gradients)
    for node in program.graph:
        if node.name not in program.saver_nodes:
            other_roots |= _calls(node)
    checkpoint_io = saver - _reach(program, other_roots)
    places = [("graph", None, program.graph)] + [
        (f"function {name!r}", name, nodes) for name, nodes in program.functions.items()]
    # Every refusal is found, and the one with the plainest reason is raised (an op
    # known to read files before the dataset op that names them), whatever order
    # TensorFlow wrote the functions in.
    refusals: list[tuple[bool, UnsafeArtifactError]] = []
    for where, name, nodes in places:
        for node in nodes:
            ops = [(node.op, f"the operation {node.op!r}")] if node.op else []
            ops += [(c, f"a call of {c!r} as a function") for c in node.calls]
            for op, what in ops:
                if op in program.functions or op in ALLOWED:
                    continue
                if op in _CHECKPOINT_IO and name in checkpoint_io:
                    continue
                why = _WHY.get(op, "it is not on kerasave's allowlist of operations that "
                                   "only compute on tensors")
                if op in _CHECKPOINT_IO:
                    why += " and is not in the functions the SavedModel's saver names"
                refusals.append((op in _WHY, _refuse(node, where, what, why, path)))
            if node.op == "PrintV2" and node.stream not in (None, *_STREAMS):
                refusals.append((True, _refuse(
                    node, where, f"a PrintV2 to {node.stream!r}",
                    "printing anywhere but the standard streams writes a file", path)))
    if refusals:
        raise next((r for known, r in refusals if known), refusals[0][1])


def _judge_consts(program: Program, path: Path) -> None:
    for where, nodes in [("graph", program.graph), *(
            (f"function {n!r}", nodes) for n, nodes in program.functions.items())]:
        for node in nodes:
            if node.const is None:
                continue
            dtype, dims, stored = node.const
            if any(d < 0 for d in dims):
                raise CorruptArtifactError(
                    f"the SavedModel's {where}: the constant {node.name!r} has shape "
                    f"{dims}", path=path)
            declared = math.prod(dims) * _ITEMSIZE.get(dtype, 8)
            if declared > max(_CONST_FLOOR, _CONST_EXPANSION * stored):
                raise CorruptArtifactError(
                    f"the SavedModel's {where}: the constant {node.name!r} declares shape "
                    f"{dims} ({declared:,} bytes) from {stored:,} stored (a shape bomb?)",
                    path=path)


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
    except ValueError:
        return False
    return True


def _judge_files(program: Program, path: Path) -> None:
    root = path.resolve()
    for name in program.assets:
        pure = PurePosixPath(name.replace("\\", "/"))
        if not name or pure.is_absolute() or ".." in pure.parts or ":" in name or \
                not _inside(root, (path / "assets" / name).resolve()):
            raise UnsafeArtifactError(
                f"the SavedModel names the asset {name!r}, outside its assets/ folder: "
                "loading it would read a file from elsewhere", path=path)
    # A link inside the directory may lead anywhere: TensorFlow would follow it.
    for folder, dirs, files in os.walk(path):
        for entry in dirs + files:
            here = Path(folder) / entry
            if here.is_symlink() and not _inside(root, here.resolve()):
                raise UnsafeArtifactError(
                    f"{here.relative_to(path)} is a link to {os.readlink(here)!r}, outside "
                    "the SavedModel: loading it would read a file from elsewhere", path=path)


def scan(path: Path, *, safe_mode: bool = True) -> Program:
    """Judge the SavedModel directory ``path`` before TensorFlow reads it.

    Raises:
        UnsafeArtifactError: (``safe_mode``) an op, call, asset or link outside the
            allowlist: see the module's docstring.
        CorruptArtifactError: ``saved_model.pb`` does not decode, or declares a
            constant far larger than it stores, or nests attributes too deeply.
    """
    with foreign_errors(path, "unreadable saved_model.pb"):
        program = read_program((path / "saved_model.pb").read_bytes())
    _judge_consts(program, path)
    if safe_mode:
        _judge_ops(program, path)
        _judge_files(program, path)
    return program
